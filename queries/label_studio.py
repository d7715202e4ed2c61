"""Reading a Label Studio JSON export (``Export -> JSON``): an array of tasks, each with annotations.

One row per annotation. The label comes from the annotation's ``choices`` or ``taxonomy`` result; a
taxonomy answer is a path such as ``["Emotional", "Negative", "Sad"]`` whose last element names the
node (by code, node id or title). The annotator is ``completed_by`` (an id, or a user object whose
e-mail is used), the duration is ``lead_time``, the item is ``data.item_id`` when the task carries one
and the task id otherwise (``--map item=KEY`` picks another ``data`` key, ``--map label=NAME`` the
control whose results to read when the labelling config has several).

The export is flattened with DuckDB's JSON functions in one query, not walked in Python.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from queries.errors import LabelgovError
from queries.ingest_fields import KIND_FIELDS, Kind
from queries.ingest_readers import RAW_TABLE, RawField, Source, duckdb_failure
from queries.results import first_row

# field -> what the export calls it, for messages
LS_FIELDS = {
    "item": "task id or data.item_id",
    "annotator": "completed_by",
    "label": "choices/taxonomy result",
    "created_at": "created_at",
    "duration": "lead_time",
    "id": "annotation id",
}
ALLOWED_MAP = ("item", "label")

_ITEM_DEFAULT = "coalesce(task -> 'data' ->> 'item_id', task ->> 'id')"
_ITEM_MAPPED = "(task -> 'data' ->> $item_key)"
_RESULTS_ALL = "list_filter(json_extract(ann, '$.result[*]'), lambda r: r ->> 'type' IN ('choices', 'taxonomy'))"
_RESULTS_NAMED = (
    "list_filter(json_extract(ann, '$.result[*]'), "
    "lambda r: r ->> 'type' IN ('choices', 'taxonomy') AND r ->> 'from_name' = $label_control)"
)

_FLATTEN_HEAD = """
WITH tasks AS (
    SELECT json AS task, row_number() OVER () AS task_no FROM read_json_objects($path, format = 'array')
), anns AS (
    SELECT task, task_no,
           unnest(json_extract(task, '$.annotations[*]')) AS ann,
           unnest(range(1, len(json_extract(task, '$.annotations[*]')) + 1)) AS ann_no
    FROM tasks
), labelled AS (
    SELECT *, """
_FLATTEN_PICK = """ AS results FROM anns
), picked AS (
    SELECT *,
        CASE WHEN len(results) = 0 THEN []::VARCHAR[]
             WHEN results[1] ->> 'type' = 'choices' THEN json_extract_string(results[1], '$.value.choices[*]')
             ELSE json_extract_string(results[1], '$.value.taxonomy[*][#-1]') END AS labels,
        coalesce(TRY_CAST(ann ->> 'was_cancelled' AS BOOLEAN), false) AS cancelled
    FROM labelled
)
SELECT row_number() OVER (ORDER BY task_no, ann_no) AS rn,
    """
_FLATTEN_TAIL = """ AS item,
    CASE json_type(ann -> 'completed_by')
        WHEN 'OBJECT' THEN coalesce(ann -> 'completed_by' ->> 'email', ann -> 'completed_by' ->> 'id')
        ELSE ann ->> 'completed_by' END AS annotator,
    CASE WHEN len(labels) = 1 THEN labels[1] END AS label,
    ann ->> 'created_at' AS created_at,
    ann ->> 'lead_time' AS duration,
    'ls-' || (ann ->> 'id') AS id,
    CASE WHEN cancelled THEN 'cancelled'
         WHEN len(results) > 1 OR len(labels) > 1 THEN 'multiple_labels' END AS reader_reason,
    CASE WHEN cancelled THEN 'the annotation was cancelled (skipped) in Label Studio'
         WHEN len(results) > 1 OR len(labels) > 1
         THEN 'the annotation has ' || greatest(len(results), len(labels))
              || ' choices/taxonomy answers; one label per annotation is expected '
              || '(pick a control with --map label=NAME)'
    END AS reader_message,
    json_object('task_id', task -> 'id', 'annotation', ann) AS original
FROM picked
"""


def open_label_studio(
    con: duckdb.DuckDBPyConnection, path: Path, kind: Kind, mapping: dict[str, str]
) -> Source:
    if kind == "predictions":
        raise LabelgovError(
            f"{path}: Label Studio exports are read for annotations and gold; write predictions as CSV, "
            "Parquet or JSON Lines with columns item_id, model, model_version, label/probabilities"
        )
    extra = sorted(set(mapping) - set(ALLOWED_MAP))
    if extra:
        raise LabelgovError(
            f"--map {extra[0]}: a Label Studio export only takes --map item=DATA_KEY and --map label=CONTROL_NAME"
        )
    params: dict[str, object] = {"path": str(path)}
    item_sql = _ITEM_DEFAULT
    results_sql = _RESULTS_ALL
    if "item" in mapping:
        item_sql = _ITEM_MAPPED
        params["item_key"] = mapping["item"]
    if "label" in mapping:
        results_sql = _RESULTS_NAMED
        params["label_control"] = mapping["label"]
    # Only fixed fragments of this module are joined here; every user value is a bound parameter.
    sql = (
        "CREATE OR REPLACE TEMP TABLE " + RAW_TABLE + " AS "
        + _FLATTEN_HEAD + results_sql + _FLATTEN_PICK + item_sql + _FLATTEN_TAIL
    )
    try:
        con.execute(sql, params)
    except duckdb.Error as exc:
        if "json" in str(exc).lower() or "malformed" in str(exc).lower():
            raise LabelgovError(
                f"{path}: is not a Label Studio JSON export (a JSON array of tasks): "
                f"{str(exc).strip().splitlines()[0]}; for JSON Lines name the file .jsonl or pass --format jsonl"
            ) from exc
        raise duckdb_failure(path, "labelstudio", exc) from exc
    row = first_row(con.execute("SELECT count(*) FROM " + RAW_TABLE))  # noqa: S608 - fixed table name
    if not row or row[0] == 0:
        raise LabelgovError(
            f"{path}: holds no annotations; export the Label Studio project as JSON after annotating"
        )
    fields = {name: RawField(name, "varchar", said) for name, said in LS_FIELDS.items() if name in KIND_FIELDS[kind]}
    return Source(
        fmt="labelstudio",
        from_sql=RAW_TABLE,
        row_number_sql="rn",
        original_columns=["original"],
        original_sql="c0",
        fields=fields,
        params={},
        reader_reason_sql="reader_reason",
        reader_message_sql="reader_message",
        match_titles=True,
    )
