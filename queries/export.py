"""`labelgov export labels`: consensus labels with their uncertainty and provenance.

One row per item: the consensus node at every level, the soft distribution on the consensus's cut,
the confidence in the consensus, how many answers it rests on, the method, the tree version and the
warehouse data version it was computed from, so that a training pipeline downstream keeps both the
uncertainty and where the labels came from.

The consensus is one node of the tree and the levels are its lineage, so every row is a path a model
can be trained on: each level's node is a child of the level above, and the levels below a consensus
that stops above the leaves are empty. It is the node the rest of the warehouse calls the method's
consensus, so the export is what the report's accuracy against gold grades:

- majority: ``d_items.consensus_node``, the node most answers chose exactly (ties to the node first in
  tree order). Confidence is the share of the item's answers that chose that node or a node below it;
  answers that stopped at one of its ancestors count against it, as they did not say it.
- dawid-skene: ``d_ds_items.ds_node``, the leaf with the highest posterior. Confidence is that
  posterior probability.

Picking each level's top node on its own would not do: answers [b, b, a1x] lead with b at the top but
only a1x reaches the levels below, which makes the impossible path b / a1 / a1x. By majority that item
is b, levels 2 and 3 empty, confidence 2/3.

The distribution is the soft label on one cut of the tree as ``queries.soft_labels`` defines it, keyed
by node id, on the cut the consensus speaks at, so that it describes the answers the consensus and its
confidence describe:

- majority: the cut at the consensus node's depth. For [b, b, a1x] it is {a: 1/3, b: 2/3}; the finest
  cut would say {a1x: 1}, as answers that stop above a cut are never spread below it, and so contradict
  the consensus with a certainty that rests on one answer of three.
- dawid-skene: the finest cut, which for the posterior (over leaves, with no coarse part) is the whole
  posterior.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Literal, get_args

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from queries import soft_labels
from queries.errors import LabelgovError
from queries.refresh import is_stale, require_refreshed

Method = Literal["dawid-skene", "majority"]
Format = Literal["csv", "parquet", "jsonl"]
# The soft-label tables keep both sources side by side; the method picks one.
SOURCE_OF: dict[str, str] = {"dawid-skene": "posterior", "majority": "annotations"}
# File extensions (compared in lower case) that name a format; a file without one is written as CSV.
FORMAT_OF_SUFFIX: dict[str, Format] = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}

# Per method: (item_idx, path, confidence, cut), the consensus node's lineage, the support for that node and
# the depth of the cut its distribution is read on.
CONSENSUS_SQL: dict[str, str] = {
    # The soft mass's answer count at the node's own depth counts the answers at or below the node.
    "majority": """
        SELECT i.item_idx, i.consensus_lineage AS path, m.answers / i.answers AS confidence,
               len(i.consensus_lineage) AS cut
        FROM d_items i LEFT JOIN d_soft_mass m ON m.source = 'annotations' AND m.item_idx = i.item_idx
            AND m.node_id = i.consensus_node AND m.depth = len(i.consensus_lineage)
    """,
    "dawid-skene": """
        SELECT d.item_idx, n.lineage AS path, d.ds_p AS confidence, (SELECT max(depth) FROM d_nodes) AS cut
        FROM d_ds_items d JOIN d_items i USING (item_idx)
        JOIN d_nodes n ON n.tree_version = i.tree_version AND n.node_id = d.ds_node
    """,
}

EXPORT_TEMPLATE = """
WITH consensus AS ({consensus}), soft AS (
    SELECT m.item_idx, map(list(m.node_id ORDER BY m.node_id), list(round(m.mass, 6) ORDER BY m.node_id))
           AS distribution
    FROM d_soft_mass m JOIN consensus c ON c.item_idx = m.item_idx AND c.cut = m.depth
    WHERE m.source = ? GROUP BY m.item_idx
)
SELECT i.item_id, c.path AS consensus_path, f.distribution, c.confidence,
       CAST(i.answers AS BIGINT) AS n_answers, i.tree_version
FROM d_items i
LEFT JOIN consensus c USING (item_idx)
LEFT JOIN soft f USING (item_idx)
ORDER BY i.item_id
"""
# The whole statement per method, fixed when the module loads: the method only ever picks one of these.
EXPORT_SQL: dict[str, str] = {
    method: EXPORT_TEMPLATE.replace("{consensus}", consensus) for method, consensus in CONSENSUS_SQL.items()
}


def labels(con: duckdb.DuckDBPyConnection, method: Method = "dawid-skene") -> pd.DataFrame:
    """The export as a DataFrame; refuses stale or missing derived tables, which would mislabel provenance."""
    if method not in SOURCE_OF:
        raise LabelgovError(f"unknown method {method!r}; use dawid-skene or majority")
    version = require_refreshed(con)
    if is_stale(con):
        raise LabelgovError("new data arrived since the last refresh: run `labelgov refresh` before exporting")
    frame = con.execute(EXPORT_SQL[method], [SOURCE_OF[method]]).df()
    depth = soft_labels.max_depth(con)
    paths = frame.pop("consensus_path")
    for level in range(1, depth + 1):
        frame.insert(level, f"level_{level}", [_at(path, level) for path in paths])
    frame["method"] = method
    frame["data_version"] = version
    return frame


def _at(path: list[str] | None, level: int) -> str | None:
    return path[level - 1] if path is not None and len(path) >= level else None


def guess_format(path: str | Path) -> Format:
    """The format a file's extension names, in any case; CSV without an extension.

    An unknown extension is refused rather than written as CSV under a name that says otherwise.
    """
    suffix = Path(path).suffix.lower()
    if not suffix:
        return "csv"
    if suffix not in FORMAT_OF_SUFFIX:
        raise LabelgovError(
            f"cannot tell the format of {path} from its extension {suffix!r}: name the file .csv, .parquet, "
            ".jsonl or .ndjson, or choose one with --format csv|parquet|jsonl"
        )
    return FORMAT_OF_SUFFIX[suffix]


def write(frame: pd.DataFrame, path: str | Path, fmt: Format) -> int:
    """Write the export; the distribution becomes a JSON object in CSV and a map in Parquet.

    The rows go to a hidden file beside the target that is renamed into place at the end, so a reader
    never sees half a file and a failed write leaves none behind.
    """
    if fmt not in get_args(Format):
        raise LabelgovError(f"unknown export format {fmt!r}; use csv, parquet or jsonl")
    target = Path(path)
    partial = target.with_name(f".{target.name}.{secrets.token_hex(6)}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_rows(frame, partial, fmt)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    except OSError as exc:
        raise LabelgovError(f"cannot write {target}: {_reason(target, exc)}") from None
    return len(frame)


def _reason(target: Path, exc: OSError) -> str:
    """Why the write failed, in words: a file where a folder is needed, else the system's reason."""
    blocking = next((p for p in reversed(target.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f"{blocking} is a file, not a folder"
    # pyarrow's messages name the hidden partial file; the error number says the same without it.
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _write_rows(frame: pd.DataFrame, target: Path, fmt: Format) -> None:
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
    else:
        # Missing values are written as null: json.dumps would write NaN, which is not JSON.
        plain = frame.assign(distribution=[dict(d or {}) for d in frame["distribution"]]).astype(object)
        records = plain.where(plain.notna(), None).to_dict("records")
        with target.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, default=str, sort_keys=True) + "\n")
