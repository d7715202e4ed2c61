"""`labelgov export labels`: consensus labels with their uncertainty and provenance.

One row per item: the consensus node at every level, the full soft distribution over the finest cut,
the confidence in the consensus, how many answers it rests on, the method, the tree version and the
warehouse data version it was computed from, so that a training pipeline downstream keeps both the
uncertainty and where the labels came from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from queries import soft_labels
from queries.errors import LabelgovError
from queries.refresh import is_stale, refreshed_version

Method = Literal["dawid-skene", "majority"]
Format = Literal["csv", "parquet", "jsonl"]
# The soft-label tables keep both sources side by side; the method picks one.
SOURCE_OF: dict[str, str] = {"dawid-skene": "posterior", "majority": "annotations"}

EXPORT_SQL = """
WITH levels AS (
    SELECT item_idx, list(top_node ORDER BY depth) AS consensus_path,
           arg_max(top_share, depth) AS finest_share
    FROM d_soft_levels WHERE source = ? GROUP BY item_idx
), finest AS (
    SELECT item_idx, map(list(node_id ORDER BY node_id), list(round(mass, 6) ORDER BY node_id)) AS distribution
    FROM d_soft_mass WHERE source = ? AND depth = (SELECT max(depth) FROM d_nodes) GROUP BY item_idx
)
SELECT i.item_id, l.consensus_path, f.distribution,
       CASE WHEN ? = 'posterior' THEN ds.ds_p ELSE l.finest_share END AS confidence,
       i.answers AS n_answers, i.tree_version
FROM d_items i
LEFT JOIN levels l USING (item_idx)
LEFT JOIN finest f USING (item_idx)
LEFT JOIN (SELECT item_idx, ds_p FROM d_ds_items) ds USING (item_idx)
ORDER BY i.item_id
"""


def labels(con: duckdb.DuckDBPyConnection, method: Method = "dawid-skene") -> pd.DataFrame:
    """The export as a DataFrame; refuses stale or missing derived tables, which would mislabel provenance."""
    if method not in SOURCE_OF:
        raise LabelgovError(f"unknown method {method!r}; use dawid-skene or majority")
    version = refreshed_version(con)
    if version is None or not soft_labels.table_exists(con, "d_soft_levels"):
        raise LabelgovError("the analytics have not been computed yet: run `labelgov refresh` first")
    if is_stale(con):
        raise LabelgovError("new data arrived since the last refresh: run `labelgov refresh` before exporting")
    source = SOURCE_OF[method]
    frame = con.execute(EXPORT_SQL, [source, source, source]).df()
    depth = soft_labels.max_depth(con)
    paths = frame.pop("consensus_path")
    for level in range(1, depth + 1):
        frame.insert(level, f"level_{level}", [_at(path, level) for path in paths])
    frame["method"] = method
    frame["data_version"] = version
    return frame


def _at(path: list[str] | None, level: int) -> str | None:
    return path[level - 1] if path is not None and len(path) >= level else None


def write(frame: pd.DataFrame, path: str | Path, fmt: Format) -> int:
    """Write the export; the distribution becomes a JSON object in CSV and a map in Parquet."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        # A dict column would become a struct with every node as a field; a map keeps it sparse.
        entries = pa.array(
            [list((d or {}).items()) for d in frame["distribution"]], type=pa.map_(pa.string(), pa.float64())
        )
        table = pa.Table.from_pandas(frame.drop(columns="distribution"), preserve_index=False)
        pq.write_table(table.add_column(frame.columns.get_loc("distribution"), "distribution", entries), target)
    elif fmt == "csv":
        flat = frame.assign(distribution=[json.dumps(dict(d or {}), sort_keys=True) for d in frame["distribution"]])
        pa_csv.write_csv(pa.Table.from_pandas(flat, preserve_index=False), target)
    elif fmt == "jsonl":
        records = frame.assign(distribution=[dict(d or {}) for d in frame["distribution"]]).to_dict("records")
        with target.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, default=str, sort_keys=True) + "\n")
    else:
        raise LabelgovError(f"unknown export format {fmt!r}; use csv, parquet or jsonl")
    return len(frame)
