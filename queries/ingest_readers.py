"""Opening an ingest file: format detection, whole-file checks and a uniform view of its fields.

A file that cannot be read as a whole (missing, empty, wrong headers, corrupt) is refused with one
message before anything is validated; a file that can be read yields a ``Source``: SQL expressions for
each mapped field over a scan of the file, so that validation is one set-based query whatever the
format. Column names from the file reach SQL only as bound parameters or as positional references
(``#3``), never as text.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from queries.errors import LabelgovError
from queries.ingest_fields import KIND_FIELDS, REQUIRED, Kind, column_for
from queries.results import first_row

FORMATS = ("csv", "tsv", "parquet", "jsonl", "labelstudio")
EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "labelstudio",
}
DELIMITERS = {"csv": ",", "tsv": "\t"}
HEADER_PEEK_BYTES = 1 << 20
JSON_KEY_SAMPLE = 10_000
RAW_TABLE = "_ingest_raw"
REJECTS = "_ingest_rejects"
REJECT_ROWS = "_ingest_reject_rows"

# Source type family -> how it is typed later; DuckDB type names by prefix.
NUMERIC_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
    "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
)


@dataclass(frozen=True)
class RawField:
    """A field as it appears in the scan: an SQL expression and the family of its source type."""

    expr: str
    family: str  # varchar | number | timestamp | timestamptz | other
    column: str  # the file's name for it, for messages
    json_expr: str | None = None  # the value as JSON over the carried original columns (JSON Lines)


@dataclass
class Source:
    """A readable file, ready for the validation query."""

    fmt: str
    from_sql: str
    row_number_sql: str
    original_columns: list[str]  # scan expressions carried as c0, c1, ... to rebuild the row as written
    original_sql: str  # the row as JSON, over c0, c1, ...
    fields: dict[str, RawField]
    params: dict[str, object] = field(default_factory=dict)
    reader_reason_sql: str = "NULL"
    reader_message_sql: str = "NULL"
    match_titles: bool = False
    rejected_sql: str | None = None  # SELECT rn, reason, message, original of rows the reader set aside


_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def used_params(sql: str, params: dict[str, object]) -> dict[str, object]:
    """The parameters that ``sql`` names: DuckDB refuses named parameters a statement does not use."""
    names = set(_PARAM.findall(sql))
    return {name: value for name, value in params.items() if name in names}


def detect_format(path: Path, fmt: str | None) -> str:
    """``--format`` wins; otherwise the extension decides (a trailing .gz is looked through)."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise LabelgovError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
        return fmt
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    found = EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise LabelgovError(
            f"{path}: cannot tell the format from the extension; name it .csv, .tsv, .parquet, .jsonl or "
            f".json (Label Studio export), or pass --format {{{','.join(FORMATS)}}}"
        )
    return found


def check_file(path: Path) -> None:
    """Refuse what is not a readable, non-empty regular file."""
    if not path.exists():
        raise LabelgovError(f"{path}: no such file")
    if not path.is_file():
        raise LabelgovError(f"{path}: is not a regular file; give the path of the file to ingest")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise LabelgovError(f"{path}: cannot be opened ({exc.strerror}); check its permissions") from exc
    if path.stat().st_size == 0:
        raise LabelgovError(f"{path}: is empty; export the data again")


def duckdb_failure(path: Path, fmt: str, exc: duckdb.Error) -> LabelgovError:
    """One line that says what is wrong with the file, from DuckDB's (multi-line) reader error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if any("unicode" in line.lower() or "not utf-8" in line.lower() for line in lines):
        return LabelgovError(f"{path}: is not UTF-8 text; save it as UTF-8")
    head = lines[0] if lines else type(exc).__name__
    detail = next(
        (line for line in lines[1:] if not line.startswith(("Original Line", "Possible", "LINE", "*", "file ="))),
        "",
    )
    said = head + (": " + detail if detail else "")
    hint = "fix the file or pass the right --format"
    if "sniffing" in head:
        hint = "check that every row has as many fields as the header and that quotes are balanced"
    return LabelgovError(f"{path}: cannot be read as {fmt} ({said}); {hint}")


def _family(type_name: str) -> str:
    upper = type_name.upper()
    if upper == "VARCHAR":
        return "varchar"
    if upper.startswith(NUMERIC_TYPES):
        return "number"
    if upper.startswith("TIMESTAMP WITH TIME ZONE") or upper == "TIMESTAMPTZ":
        return "timestamptz"
    if upper.startswith(("TIMESTAMP", "DATE")):
        return "timestamp"
    return "other"


def _resolve_fields(
    path: Path,
    kind: Kind,
    mapping: dict[str, str],
    columns: list[str],
    families: list[str],
    expr_of: list[str],
    json_of: list[str] | None = None,
) -> dict[str, RawField]:
    """Match fields to columns; refuse a mapped or required column that is not in the file."""
    position = {name: i for i, name in enumerate(columns)}
    fields: dict[str, RawField] = {}
    for name in KIND_FIELDS[kind]:
        column = column_for(name, mapping)
        if column in position:
            i = position[column]
            fields[name] = RawField(expr_of[i], families[i], column, json_of[i] if json_of else None)
        elif name in mapping:
            raise LabelgovError(
                f"{path}: --map {name}={column}: there is no column {column!r}; the columns are "
                f"{', '.join(columns)}"
            )
    missing = [f"{column_for(name, mapping)!r} ({name})" for name in REQUIRED[kind] if name not in fields]
    if kind == "predictions" and "label" not in fields and "probabilities" not in fields:
        missing.append(f"{column_for('label', mapping)!r} or {column_for('probabilities', mapping)!r}")
    if missing:
        raise LabelgovError(
            f"{path}: required column missing for {kind}: {', '.join(missing)}; the columns are "
            f"{', '.join(columns) or 'none'}; rename them or map them with --map FIELD=COLUMN "
            "(e.g. --map item=question,annotator=worker,label=answer)"
        )
    return fields


def _original_sql(columns: list[str], params: dict[str, object]) -> str:
    """``json_object($h0, c0, $h1, c1, ...)``: the file's column names are bound, never written into SQL."""
    parts = []
    for i, name in enumerate(columns):
        key = "h" + str(i)
        params[key] = name
        parts.append("$" + key + ", c" + str(i))
    return "json_object(" + ", ".join(parts) + ")"


def _peek(path: Path) -> bytes:
    """The first bytes of the file, decompressed when it is gzipped."""
    try:
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read(HEADER_PEEK_BYTES)
        with path.open("rb") as handle:
            return handle.read(HEADER_PEEK_BYTES)
    except (OSError, EOFError) as exc:
        raise LabelgovError(f"{path}: cannot be read ({exc}); export it again") from exc


# Python's csv module refuses fields over 128 KiB; no real header comes close.
MAX_HEADER_CHARS = 100_000


def _csv_header(path: Path, fmt: str) -> list[str]:
    """The header row as written (DuckDB silently renames duplicates, which we must refuse)."""
    first = _peek(path).split(b"\n", 1)[0].rstrip(b"\r")
    try:
        line = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelgovError(f"{path}: is not UTF-8 text; save it as UTF-8") from exc
    if len(line) > MAX_HEADER_CHARS:
        raise LabelgovError(
            f"{path}: the first line is {len(line):,} characters long; it should be a header row naming the columns"
        )
    header = next(csv.reader(io.StringIO(line), delimiter=DELIMITERS[fmt]), [])
    names = [h.strip() for h in header]
    if not any(names):
        raise LabelgovError(f"{path}: the first line is empty; the file needs a header row naming its columns")
    blank = [i + 1 for i, name in enumerate(names) if not name]
    if blank:
        raise LabelgovError(f"{path}: header column {blank[0]} has no name; name every column in the header row")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise LabelgovError(f"{path}: the header names column {name!r} twice; rename one of them")
        seen.add(name)
    return names


def _execute(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, sql: str, params: dict[str, object]) -> None:
    try:
        con.execute(sql, params)
    except duckdb.Error as exc:
        raise duckdb_failure(path, fmt, exc) from exc


def _row_count(con: duckdb.DuckDBPyConnection) -> int:
    row = first_row(con.execute("SELECT count(*) FROM " + RAW_TABLE))  # noqa: S608 - fixed table name
    return int(row[0]) if row else 0


def _require_rows(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    if _row_count(con) == 0:
        raise LabelgovError(f"{path}: has no data rows, only a header or blank lines")


def _malformed_rows(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Collect the rows DuckDB could not split into the header's fields; refuse a file that is not UTF-8.

    DuckDB numbers rejected records by line (the header is line 1). For each rejected row we keep how many
    good rows precede it (``before``), which is what turns a good row's rowid back into its place in the file.
    """
    encoding = first_row(con.execute(
        "SELECT count(*) FROM " + REJECTS + " WHERE error_type IN ('INVALID ENCODING', 'INVALID UNICODE')"  # noqa: S608 - fixed table name
    ))
    if encoding and encoding[0]:
        raise LabelgovError(f"{path}: is not UTF-8 text; save it as UTF-8")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE " + REJECT_ROWS + " AS SELECT line - 1 AS rn, any_value(csv_line) AS csv_line, "  # noqa: S608 - fixed table names
        "arg_max(error_message, byte_position) AS message, "
        "line - 1 - row_number() OVER (ORDER BY line) AS before FROM " + REJECTS + " GROUP BY line"
    )
    row = first_row(con.execute("SELECT count(*) FROM " + REJECT_ROWS))  # noqa: S608 - fixed table name
    return int(row[0]) if row else 0


def open_delimited(
    con: duckdb.DuckDBPyConnection, path: Path, fmt: str, kind: Kind, mapping: dict[str, str]
) -> Source:
    """CSV/TSV, read as text into a temporary table whose rowid gives the row's place in the file.

    Rows with too many or too few fields are set aside by DuckDB and quarantined as ``malformed_row``.
    """
    names = _csv_header(path, fmt)
    separated = "tabs" if fmt == "tsv" else "commas"
    _execute(
        con, path, fmt,
        "CREATE OR REPLACE TEMP TABLE " + RAW_TABLE + " AS SELECT * FROM read_csv($path, header = true, "  # noqa: S608 - fixed table name
        "delim = $delim, all_varchar = true, store_rejects = true, rejects_table = '" + REJECTS + "', "
        "rejects_scan = '" + REJECTS + "_scans')",
        {"path": str(path), "delim": DELIMITERS[fmt]},
    )
    columns = [d[0] for d in con.execute("SELECT * FROM " + RAW_TABLE + " LIMIT 0").description]  # noqa: S608 - fixed table name
    if len(columns) != len(names):
        raise LabelgovError(
            f"{path}: the header has {len(names)} columns but the rows have {len(columns)}; check the delimiter "
            f"(a {fmt} file is separated by {separated}) and that every row has as many fields as the header"
        )
    malformed = _malformed_rows(con, path)
    if malformed and _row_count(con) == 0:
        raise LabelgovError(
            f"{path}: no row has the header's {len(names)} fields; check the delimiter (a {fmt} file is separated "
            f"by {separated}) and the quoting"
        )
    _require_rows(con, path)
    expr_of = ["#" + str(i + 1) for i in range(len(names))]
    params: dict[str, object] = {}
    row_number = "rowid + 1"
    rejected = None
    if malformed:
        row_number = (
            "rowid + 1 + (SELECT count(*) FROM " + REJECT_ROWS + " r WHERE r.before <= " + RAW_TABLE + ".rowid)"  # noqa: S608 - fixed table names
        )
        rejected = (
            "SELECT rn, 'malformed_row', concat('line ', rn + 1, ': ', message, ' (the header has ', "  # noqa: S608 - fixed table name
            + str(len(names)) + ", ' fields)'), json_object('line', csv_line) FROM " + REJECT_ROWS
        )
    return Source(
        fmt=fmt,
        from_sql=RAW_TABLE,
        row_number_sql=row_number,
        original_columns=expr_of,
        original_sql=_original_sql(names, params),
        fields=_resolve_fields(path, kind, mapping, names, ["varchar"] * len(names), expr_of),
        params=params,
        rejected_sql=rejected,
    )


def _parquet_schema(path: Path) -> list[str]:
    try:
        return list(pq.ParquetFile(path).schema_arrow.names)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise LabelgovError(
            f"{path}: is not a readable Parquet file ({type(exc).__name__}: {exc}); export it again"
        ) from exc


def open_parquet(
    con: duckdb.DuckDBPyConnection, path: Path, kind: Kind, mapping: dict[str, str]
) -> Source:
    """Parquet is scanned in place: its own row numbers give the place in the file, so no copy is needed."""
    names = _parquet_schema(path)
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise LabelgovError(f"{path}: has two columns named {twice!r}; rename one of them")
    try:
        described = con.execute("SELECT * FROM read_parquet($path) LIMIT 0", {"path": str(path)}).description
        rows = first_row(con.execute("SELECT count(*) FROM read_parquet($path)", {"path": str(path)}))
    except duckdb.Error as exc:
        raise duckdb_failure(path, "parquet", exc) from exc
    if not rows or rows[0] == 0:
        raise LabelgovError(f"{path}: has no rows")
    families = [_family(str(d[1])) for d in described]
    expr_of = ["#" + str(i + 1) for i in range(len(names))]
    params: dict[str, object] = {"path": str(path)}
    return Source(
        fmt="parquet",
        from_sql="read_parquet($path, file_row_number = true)",
        row_number_sql="file_row_number + 1",
        original_columns=expr_of,
        original_sql=_original_sql(names, params),
        fields=_resolve_fields(path, kind, mapping, names, families, expr_of),
        params=params,
    )


def _first_text(path: Path) -> str:
    head = _peek(path)
    try:
        return head.decode("utf-8-sig").lstrip()
    except UnicodeDecodeError as exc:
        if len(head) == HEADER_PEEK_BYTES and exc.start > HEADER_PEEK_BYTES - 4:
            return head[: exc.start].decode("utf-8-sig").lstrip()
        raise LabelgovError(f"{path}: is not UTF-8 text; save it as UTF-8") from exc


def open_jsonl(con: duckdb.DuckDBPyConnection, path: Path, kind: Kind, mapping: dict[str, str]) -> Source:
    """JSON Lines: one object per line; fields are looked up by key (a bound parameter) in each object."""
    start = _first_text(path)
    if not start:
        raise LabelgovError(f"{path}: holds only white space; export the data again")
    if start.startswith("["):
        raise LabelgovError(
            f"{path}: is a JSON array, not JSON Lines (one object per line); for a Label Studio export "
            "name it .json or pass --format labelstudio"
        )
    if not start.startswith("{"):
        raise LabelgovError(f"{path}: is not JSON Lines; each line must be one JSON object")
    _execute(
        con, path, "jsonl",
        "CREATE OR REPLACE TEMP TABLE " + RAW_TABLE + " AS SELECT json FROM read_ndjson_objects($path)",  # noqa: S608 - fixed table name
        {"path": str(path)},
    )
    _require_rows(con, path)
    keys = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT unnest(json_keys(json)) FROM (SELECT json FROM " + RAW_TABLE + " LIMIT $n) "  # noqa: S608 - fixed table name
            "WHERE json_type(json) = 'OBJECT'",
            {"n": JSON_KEY_SAMPLE},
        ).fetchall()
    ]
    params: dict[str, object] = {}
    expr_of, json_of = [], []
    for i, key in enumerate(keys):
        params["k" + str(i)] = key
        expr_of.append("(json ->> $k" + str(i) + ")")
        json_of.append("(c0 -> $k" + str(i) + ")")  # the checks see the object as c0 (original_columns)
    return Source(
        fmt="jsonl",
        from_sql=RAW_TABLE,
        row_number_sql="rowid + 1",
        original_columns=["json"],
        original_sql="c0",
        fields=_resolve_fields(path, kind, mapping, keys, ["varchar"] * len(keys), expr_of, json_of),
        params=params,
    )
