"""The validation of an ingest file as one set-based DuckDB query.

Each row gets the first failing check's reason code (or none) from a CASE over typed columns, so a
file of ten million rows is judged in a few vectorised passes rather than row by row. The result is a
temporary staging table holding typed, label-resolved rows plus reason, message and the original row
(turned into JSON for quarantined rows only); writing the batch afterwards is a handful of INSERT ... SELECTs.

All SQL text here is assembled from fixed fragments of this module and from field names of the fixed
vocabulary in ``ingest_fields``; every value (tree version, column names for messages, limits) is a
bound ``$name`` parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from queries.ingest_fields import FIELDS, KIND_FIELDS, REQUIRED, STAGES, Kind, Shape
from queries.ingest_readers import RawField, Source

STAGED = "_ingest_staged"
LABELS = "_ingest_labels"
LABEL_MAP = "_ingest_label_map"

PROB_FIELD: dict[Kind, str | None] = {
    "annotations": "distribution", "gold": None, "predictions": "probabilities", "escalations": None,
}

_NULL_OF = {
    Shape.TEXT: "CAST(NULL AS VARCHAR)",
    Shape.NUMBER: "CAST(NULL AS DOUBLE)",
    Shape.TIMESTAMP: "CAST(NULL AS TIMESTAMP)",
    Shape.PROBABILITIES: "CAST(NULL AS MAP(VARCHAR, DOUBLE))",
}
DEFAULTS = {"stage": "initial", "model_version": "unversioned"}
# A time followed by Z, a numeric offset or a zone name: DuckDB's TIMESTAMP cast would drop the zone.
_ZONE_SUFFIX = r":\d\d(\.\d*)?\s*([zZ]|[+-]\d\d(:?\d\d)?|[A-Za-z][A-Za-z0-9_/+-]*)$"
_EPOCH_LIMIT = "1e11"  # epoch seconds beyond this are milliseconds or garbage, not a date
# A trigger is a rule's short name (low_confidence, disagreement); a long text is a comment column mapped by mistake.
TRIGGER_MAX_CHARS = 64
# Columns kept in the staging table, per kind (besides rn, reason, message, original).
STAGED_COLUMNS: dict[Kind, tuple[str, ...]] = {
    "annotations": (
        "item", "annotator", "node_id", "created_at", "duration", "cost", "stage", "confidence", "id", "distribution",
    ),
    "gold": ("item", "node_id", "source"),
    "predictions": ("item", "model", "model_version", "node_id", "probabilities", "created_at"),
    "escalations": ("item", "trigger", "routed_to", "created_at", "resolved_at"),
}


@dataclass(frozen=True)
class Check:
    """One rule: rows where ``condition`` holds (and no earlier rule failed) get ``reason``."""

    reason: str
    condition: str
    message: str


def _text(expr: str) -> str:
    # trim() copies every string; only the rare padded value needs it. Only ASCII spaces are trimmed: a bare
    # trim() also strips Unicode spaces, but only from values that happen to start or end with an ASCII
    # one, so ' \u00a0x' and '\u00a0x' would have been stored differently.
    return (
        "CASE WHEN starts_with(" + expr + ", ' ') OR ends_with(" + expr + ", ' ') THEN NULLIF(trim(" + expr
        + ", ' '), '') ELSE NULLIF(" + expr + ", '') END"
    )


def _number(raw: RawField) -> str:
    if raw.family == "number":
        return "CAST(" + raw.expr + " AS DOUBLE)"
    if raw.family == "varchar":
        return "TRY_CAST(" + raw.expr + " AS DOUBLE)"
    return "TRY_CAST(CAST(" + raw.expr + " AS VARCHAR) AS DOUBLE)"


def _epoch(number_sql: str) -> str:
    return (
        "CAST(to_timestamp(CASE WHEN abs(" + number_sql + ") < " + _EPOCH_LIMIT + " THEN " + number_sql
        + " END) AS TIMESTAMP)"
    )


def _timestamp(raw: RawField) -> str:
    """ISO 8601 text with or without a zone (read as UTC), epoch seconds, or a typed column -> naive UTC.

    The session time zone is UTC during ingest, so casting through TIMESTAMPTZ applies a written offset
    and leaves zone-less text as it is.
    """
    if raw.family in ("timestamp", "timestamptz"):
        return "CAST(" + raw.expr + " AS TIMESTAMP)"
    if raw.family == "number":
        return _epoch("CAST(" + raw.expr + " AS DOUBLE)")
    text = raw.expr if raw.family == "varchar" else "CAST(" + raw.expr + " AS VARCHAR)"
    # Parsing through TIMESTAMPTZ is several times slower, so only text that names a zone takes that path.
    return (
        "CASE WHEN regexp_matches(" + text + ", '" + _ZONE_SUFFIX + "') THEN CAST(TRY_CAST(" + text
        + " AS TIMESTAMPTZ) AS TIMESTAMP) ELSE coalesce(TRY_CAST(" + text + " AS TIMESTAMP), "
        + _epoch("TRY_CAST(" + text + " AS DOUBLE)") + ") END"
    )


def _probabilities(raw: RawField) -> str:
    if raw.family == "varchar":
        return "TRY_CAST(TRY_CAST(" + raw.expr + " AS JSON) AS MAP(VARCHAR, DOUBLE))"
    return "TRY_CAST(to_json(" + raw.expr + ") AS MAP(VARCHAR, DOUBLE))"


def typed_expr(shape: Shape, raw: RawField) -> str:
    if shape is Shape.TEXT:
        return _text(raw.expr if raw.family == "varchar" else "CAST(" + raw.expr + " AS VARCHAR)")
    if shape is Shape.NUMBER:
        return _number(raw)
    if shape is Shape.TIMESTAMP:
        return _timestamp(raw)
    return _probabilities(raw)


def _raw_text(field: str) -> str:
    return "CAST(" + field + "_raw AS VARCHAR)"


def _missing(field: str) -> Check:
    """A required field left empty. Text is empty once trimmed; a timestamp only when nothing was written,
    so that a written but unreadable time is reported as such by the timestamp checks."""
    condition = field + " IS NULL"
    if FIELDS[field][1] is Shape.TIMESTAMP:
        condition += " AND nullif(trim(" + _raw_text(field) + "), '') IS NULL"
    return Check("missing_field", condition, "concat('no " + field + " (column ', $col_" + field + ", ')')")


def _label_checks(kind: Kind, source: Source) -> list[Check]:
    if kind == "predictions":
        missing = Check(
            "missing_field",
            "label IS NULL AND probabilities_raw IS NULL",
            "concat('no label (column ', $col_label, ') and no probabilities (column ', $col_probabilities, ')')",
        )
    else:
        missing = Check("missing_field", "label IS NULL", "concat('no label (column ', $col_label, ')')")
    unknown = "a code, node id or title" if source.match_titles else "a code or node id"
    return [
        missing,
        Check(
            "unknown_label",
            "label IS NOT NULL AND node_id IS NULL",
            "concat('label ', label, ' is not " + unknown + " in tree version ', $tree_version)",
        ),
        Check(
            "deprecated_node",
            "node_status <> 'active'",
            "concat('label ', label, ' names node ', node_id, ', which is ', node_status, ' in tree version ', "
            "$tree_version, '; relabel with its replacement')",
        ),
    ]


def _timestamp_checks(field: str) -> list[Check]:
    said = "concat('" + field + " ', " + _raw_text(field) + ", ' is "
    return [
        Check(
            "bad_timestamp",
            field + "_raw IS NOT NULL AND " + field + " IS NULL",
            said + "not an ISO 8601 timestamp or epoch seconds')",
        ),
        Check(
            "bad_timestamp",
            field + " < $ts_min OR " + field + " > $ts_max",
            said + "impossible: before 1990 or more than a day in the future')",
        ),
    ]


def _escalation_checks(present: dict[str, RawField]) -> list[Check]:
    checks = [
        Check(
            "bad_trigger",
            "length(trigger) > $trigger_max",
            "concat('trigger ', left(trigger, 40), '... is ', length(trigger), ' characters long; a trigger is a "
            "short name such as low_confidence (at most ', $trigger_max, '): check which column --map trigger= names')",
        )
    ]
    if "resolved_at" in present:
        checks.append(
            Check(
                "resolved_before_created",
                "resolved_at < created_at",
                "concat('resolved_at ', " + _raw_text("resolved_at") + ", ' is before created_at ', "
                + _raw_text("created_at") + ", '; an escalation is resolved after it is raised')",
            )
        )
    return checks


def _checks(kind: Kind, source: Source) -> list[Check]:
    """The rules for ``kind`` in the order they are applied; only fields present in the file are checked."""
    present = source.fields
    checks = [Check("reader", "reader_reason IS NOT NULL", "reader_message")]
    checks += [_missing(field) for field in REQUIRED[kind] if field != "label"]
    for field in ("item", "annotator", "model", "id", "trigger", "routed_to"):
        if field in KIND_FIELDS[kind] and field in present:
            checks += _id_checks(field, present[field])
    if "label" in KIND_FIELDS[kind]:
        checks += _label_checks(kind, source)
    if "stage" in present:
        checks.append(
            Check(
                "bad_stage",
                "stage NOT IN (" + ", ".join("'" + s + "'" for s in STAGES) + ")",
                "concat('stage ', stage, ' is not one of " + ", ".join(STAGES) + "')",
            )
        )
    for field in ("created_at", "resolved_at"):
        if field in present:
            checks += _timestamp_checks(field)
    if kind == "escalations":
        checks += _escalation_checks(present)
    for field, reason in (("duration", "negative_duration"), ("cost", "negative_cost")):
        if field in present:
            checks += [
                Check(
                    "bad_number",
                    field + "_raw IS NOT NULL AND (" + field + " IS NULL OR NOT isfinite(" + field + "))",
                    "concat('" + field + " ', " + _raw_text(field) + ", ' is not a finite number')",
                ),
                Check(reason, field + " < 0", "concat('" + field + " ', " + field + ", ' is negative')"),
            ]
    if "confidence" in present:
        checks.append(
            Check(
                "bad_confidence",
                "confidence_raw IS NOT NULL AND (confidence IS NULL OR NOT isfinite(confidence) "
                "OR confidence < 0 OR confidence > 1)",
                "concat('confidence ', " + _raw_text("confidence") + ", ' is not a number between 0 and 1')",
            )
        )
    prob = PROB_FIELD[kind]
    if prob is not None and prob in present:
        checks += _probability_checks(prob)
    return checks


def _id_checks(field: str, raw: RawField) -> list[Check]:
    """Ids are joined, shown and exported as text. A NUL character ends a string for most tools that read an
    export, so two distinct ids would print alike; it never belongs in an id and is refused from every format.
    An object or list (a JSON value) would be stored as its JSON text, which nobody can type back; only JSON
    Lines and columns the reader typed as neither text nor number can hold one, so CSV and typed Parquet files
    pay nothing for that check."""
    where = " (column ', $col_" + field + ", ')"
    checks = [
        Check(
            "bad_id",
            "contains(" + field + ", chr(0))",
            "concat('" + field + " ', replace(" + field + ", chr(0), '\\0'), '" + where
            + " holds a NUL character: ids must be plain text')",
        )
    ]
    as_json = raw.json_expr or ("to_json(" + field + "_raw)" if raw.family == "other" else None)
    if as_json is not None:
        checks.append(
            Check(
                "bad_id",
                "json_type(" + as_json + ") IN ('OBJECT', 'ARRAY')",
                "concat('" + field + " ', " + _raw_text(field) + ", '" + where
                + " is an object or list, not a text id')",
            )
        )
    return checks


def _probability_checks(field: str) -> list[Check]:
    said = "concat('" + field + " ', " + _raw_text(field) + ", ' "
    return [
        Check(
            "bad_distribution",
            field + "_raw IS NOT NULL AND " + field + " IS NULL",
            said + "is not a JSON object of label -> probability')",
        ),
        Check("bad_distribution", "cardinality(" + field + ") = 0", said + "is empty')"),
        Check(
            "bad_distribution",
            "list_count(p_values) < len(p_values) OR NOT isfinite(list_sum(p_values))",
            said + "has a value that is not a finite number')",
        ),
        Check("bad_distribution", "list_min(p_values) < 0", said + "has a negative probability')"),
        Check(
            "bad_distribution",
            "abs(list_sum(p_values) - 1) > greatest(1e-6 * len(p_values), 1e-3)",
            said + "sums to ', round(list_sum(p_values), 6), ', not 1')",
        ),
        Check(
            "bad_distribution",
            "list_count(p_nodes) < len(p_nodes)",
            said + "names a label that is not a code or id of an active node')",
        ),
        Check(
            "bad_distribution",
            "len(list_distinct(p_nodes)) < len(p_nodes)",
            said + "gives two probabilities for the same node')",
        ),
    ]


def _case(checks: list[Check], pick: str) -> str:
    """``CASE failed WHEN 1 THEN <reason or message of check 1> ... END``, for failed rows only.

    The outer test matters for speed: a NULL ``failed`` matches no WHEN, so without it every one of the
    comparisons would run over every accepted row.
    """
    parts = []
    for number, check in enumerate(checks, start=1):
        value = getattr(check, pick)
        if pick == "reason":
            value = "reader_reason" if check.reason == "reader" else "'" + check.reason + "'"
        parts.append("WHEN " + str(number) + " THEN " + value)
    return "CASE WHEN failed IS NOT NULL THEN CASE failed " + " ".join(parts) + " END END"


def _node_sql(kind: Kind) -> str:
    if kind == "predictions":
        return "coalesce(node_id, p_nodes[list_position(p_values, list_max(p_values))])"
    return "node_id"


def _final_column(kind: Kind, column: str) -> str:
    if column == "node_id":
        return _node_sql(kind) + " AS node_id"
    if column == "distribution":
        return "CASE WHEN failed IS NULL AND distribution IS NOT NULL THEN map(p_nodes, p_values) END AS distribution"
    if column == "probabilities":
        return (
            "CASE WHEN failed IS NULL THEN (CASE WHEN probabilities IS NOT NULL THEN map(p_nodes, p_values) "
            "ELSE map([node_id], [1.0::DOUBLE]) END) END AS probabilities"
        )
    return column


def _resolved_sql(kind: Kind, match_titles: bool) -> str:
    """The ``labelled`` and ``resolved`` CTEs: each row's label looked up in the tree, for kinds that have one."""
    if "label" not in KIND_FIELDS[kind]:
        return "resolved AS (SELECT * FROM scan), "
    prob = PROB_FIELD[kind]
    title_filter = "" if match_titles else " WHERE priority < 3"
    return (
        "labelled AS (SELECT * FROM " + LABELS + title_filter + "), "  # noqa: S608 - fixed fragments
        + "resolved AS (SELECT scan.*, labelled.node_id, labelled.status AS node_status"
        + (", " + LABEL_MAP + ".lm" if prob else "")
        + " FROM scan LEFT JOIN labelled ON labelled.key = scan.label"
        + (" CROSS JOIN " + LABEL_MAP if prob else "") + "), "
    )


def staging_sql(kind: Kind, source: Source, tree_version: int, now: datetime) -> tuple[str, dict[str, object]]:
    """The CREATE TEMP TABLE statement that validates the whole file, and its parameters."""
    params: dict[str, object] = dict(source.params)
    params["tree_version"] = tree_version
    params["ts_min"] = datetime(1990, 1, 1)
    params["ts_max"] = now.replace(tzinfo=None) + timedelta(days=1)
    params["trigger_max"] = TRIGGER_MAX_CHARS
    scan = [source.row_number_sql + " AS rn", source.reader_reason_sql + " AS reader_reason",
            source.reader_message_sql + " AS reader_message"]
    scan += [expr + " AS c" + str(i) for i, expr in enumerate(source.original_columns)]
    for field in KIND_FIELDS[kind]:
        shape = FIELDS[field][1]
        raw = source.fields.get(field)
        params["col_" + field] = raw.column if raw else FIELDS[field][0]
        if raw is None:
            typed, raw_sql = _NULL_OF[shape], "NULL"
        else:
            typed, raw_sql = typed_expr(shape, raw), raw.expr
        if field in DEFAULTS:
            typed = "coalesce(" + typed + ", '" + DEFAULTS[field] + "')"
        scan += [typed + " AS " + field, raw_sql + " AS " + field + "_raw"]
    prob = PROB_FIELD[kind]
    checks = _checks(kind, source)
    conditions = " ".join(
        "WHEN " + c.condition + " THEN " + str(n) for n, c in enumerate(checks, start=1)
    )
    sql = (
        "CREATE OR REPLACE TEMP TABLE " + STAGED + " AS WITH scan AS (SELECT " + ", ".join(scan)  # noqa: S608 - fixed fragments
        + " FROM " + source.from_sql + "), " + _resolved_sql(kind, source.match_titles)
        + "probs AS (SELECT *"
        + (
            ", list_transform(map_keys(" + prob + "), lambda k: lm[k]) AS p_nodes, map_values(" + prob
            + ") AS p_values"
            if prob
            else ""
        )
        + " FROM resolved), checked AS (SELECT *, CASE " + conditions + " END AS failed FROM probs) "
        + "SELECT rn, " + ", ".join(_final_column(kind, c) for c in STAGED_COLUMNS[kind])
        + ", " + _case(checks, "reason") + " AS reason, "
        + _case(checks, "message") + " AS message, "
        + "CASE WHEN failed IS NOT NULL THEN " + source.original_sql + " END AS original FROM checked"
    )
    return sql, params


def prepare_labels(con: duckdb.DuckDBPyConnection, tree_version: int) -> None:
    """Lookup of raw label -> node: codes first, then node ids, then titles (used for Label Studio)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE " + LABELS + " AS SELECT key, node_id, status, priority FROM ("  # noqa: S608 - fixed table name
        "SELECT key, node_id, status, priority, row_number() OVER (PARTITION BY key ORDER BY priority) AS pick "
        "FROM (SELECT unnest(codes) AS key, node_id, status, 1 AS priority FROM tree_nodes WHERE tree_version = $v "
        "UNION ALL SELECT node_id, node_id, status, 2 FROM tree_nodes WHERE tree_version = $v "
        "UNION ALL SELECT title, node_id, status, 3 FROM tree_nodes WHERE tree_version = $v)) WHERE pick = 1",
        {"v": tree_version},
    )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE " + LABEL_MAP + " AS SELECT map(list(key), list(node_id)) AS lm "
        "FROM " + LABELS + " WHERE status = 'active' AND priority < 3",
    )
