"""The corpus cases that are binary or large, written at test time so that no binary or big file is kept."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HUGE_BYTES = 12 << 20  # one field larger than DuckDB's default 2 MB line buffer and the 1 MB header peek


def _good_parquet() -> bytes:
    table = pa.table({"item_id": ["pq1", "pq2", "pq3"], "annotator_id": ["a1", "a1", "a2"], "label": ["1", "2", "3"]})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _write_parquet(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def parquet_truncated(folder: Path) -> Path:
    data = _good_parquet()
    path = folder / "parquet_truncated.parquet"
    path.write_bytes(data[: len(data) // 2])
    return path


def parquet_corrupt_footer(folder: Path) -> Path:
    data = bytearray(_good_parquet())
    # The footer's length field sits just before the trailing magic; make it point before the file start.
    data[-8:-4] = (len(data) * 4).to_bytes(4, "little")
    path = folder / "parquet_corrupt_footer.parquet"
    path.write_bytes(bytes(data))
    return path


def parquet_text_inside(folder: Path) -> Path:
    path = folder / "parquet_text_inside.parquet"
    path.write_text("item_id,annotator_id,label\ni1,a1,1\n", encoding="utf-8")
    return path


def parquet_empty_table(folder: Path) -> Path:
    path = folder / "parquet_empty_table.parquet"
    _write_parquet(path, pa.table({"item_id": pa.array([], pa.string()), "annotator_id": pa.array([], pa.string()),
                                   "label": pa.array([], pa.string())}))
    return path


def parquet_wrong_types(folder: Path) -> Path:
    """Numbers where text is expected, text where numbers are, a boolean timestamp."""
    path = folder / "parquet_wrong_types.parquet"
    _write_parquet(path, pa.table({
        "item_id": pa.array([101, 102, 103], pa.int64()),
        "annotator_id": ["a1", "a1", "a1"],
        "label": pa.array([1, 2, 3], pa.int32()),
        "duration_s": ["1.5", "fast", "2"],
        "created_at": [True, False, True],
    }))
    return path


def parquet_nan_infinity(folder: Path) -> Path:
    path = folder / "parquet_nan_infinity.parquet"
    _write_parquet(path, pa.table({
        "item_id": ["pn1", "pn2", "pn3", "pn4"],
        "annotator_id": ["a1"] * 4,
        "label": ["1"] * 4,
        "duration_s": [float("nan"), float("inf"), 1.0, 2.0],
        "confidence": [0.5, 0.5, float("-inf"), 0.5],
    }))
    return path


def parquet_nested_ids(folder: Path) -> Path:
    """Ids that are a struct and a list: stored as their JSON text they could never be typed back."""
    path = folder / "parquet_nested_ids.parquet"
    _write_parquet(path, pa.table({
        "item_id": pa.array([{"id": "s1"}, {"id": "s2"}], pa.struct([("id", pa.string())])),
        "annotator_id": pa.array([["a1"], ["a2"]], pa.list_(pa.string())),
        "label": ["1", "2"],
    }))
    return path


def parquet_duplicate_columns(folder: Path) -> Path:
    path = folder / "parquet_duplicate_columns.parquet"
    table = pa.Table.from_arrays([pa.array(["d1"]), pa.array(["a1"]), pa.array(["1"]), pa.array(["2"])],
                                 names=["item_id", "annotator_id", "label", "label"])
    _write_parquet(path, table)
    return path


def csv_huge_field(folder: Path) -> Path:
    """A valid row whose label is many megabytes long: it is read, and quarantined as an unknown label."""
    path = folder / "csv_huge_field.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("item_id,annotator_id,label\nh1,a1,1\nh2,a1,")
        handle.write("9" * HUGE_BYTES)
        handle.write("\n")
    return path


def csv_huge_header(folder: Path) -> Path:
    """A first line longer than the header peek: no newline within it."""
    path = folder / "csv_huge_header.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("item_id,annotator_id,label,")
        handle.write("x" * HUGE_BYTES)
        handle.write("\ni1,a1,1,2\n")
    return path


def jsonl_huge_field(folder: Path) -> Path:
    path = folder / "jsonl_huge_field.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"item_id": "hj1", "annotator_id": "a1", "label": "1"}\n')
        handle.write('{"item_id": "hj2", "annotator_id": "a1", "label": "' + "9" * HUGE_BYTES + '"}\n')
    return path


_SUFFIX = {"parquet": ".parquet", "csv": ".csv", "jsonl": ".jsonl"}
MAKERS: dict[str, Callable[[Path], Path]] = {
    maker.__name__ + _SUFFIX[maker.__name__.split("_", 1)[0]]: maker
    for maker in (
        parquet_truncated, parquet_corrupt_footer, parquet_text_inside, parquet_empty_table, parquet_wrong_types,
        parquet_nan_infinity, parquet_nested_ids, parquet_duplicate_columns, csv_huge_field, csv_huge_header,
        jsonl_huge_field,
    )
}


def make(name: str, folder: Path) -> Path:
    """Write corpus case ``name`` (a file name) into ``folder`` and return its path."""
    return MAKERS[name](folder)
