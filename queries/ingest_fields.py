"""What an ingest file may contain: the fields of each kind, their default column names and ``--map``.

Files come from many labelling tools whose columns are named differently, so the fields are a fixed
vocabulary and a mapping says which column holds which field. Everything downstream works on field
names only, never on the file's own column names, so no user-supplied name ever reaches SQL text.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from queries.errors import LabelgovError

Kind = Literal["annotations", "gold", "predictions", "escalations"]
KINDS: tuple[Kind, ...] = ("annotations", "gold", "predictions", "escalations")


class Shape(StrEnum):
    """How a field's text is turned into a typed value."""

    TEXT = "text"
    NUMBER = "number"
    TIMESTAMP = "timestamp"
    PROBABILITIES = "probabilities"


# field -> (default column, shape)
FIELDS: dict[str, tuple[str, Shape]] = {
    "item": ("item_id", Shape.TEXT),
    "annotator": ("annotator_id", Shape.TEXT),
    "label": ("label", Shape.TEXT),
    "created_at": ("created_at", Shape.TIMESTAMP),
    "duration": ("duration_s", Shape.NUMBER),
    "cost": ("cost", Shape.NUMBER),
    "stage": ("stage", Shape.TEXT),
    "confidence": ("confidence", Shape.NUMBER),
    "id": ("annotation_id", Shape.TEXT),
    "distribution": ("distribution", Shape.PROBABILITIES),
    "source": ("source", Shape.TEXT),
    "model": ("model", Shape.TEXT),
    "model_version": ("model_version", Shape.TEXT),
    "probabilities": ("probabilities", Shape.PROBABILITIES),
    "trigger": ("trigger", Shape.TEXT),
    "routed_to": ("routed_to", Shape.TEXT),
    "resolved_at": ("resolved_at", Shape.TIMESTAMP),
}

KIND_FIELDS: dict[Kind, tuple[str, ...]] = {
    "annotations": (
        "item", "annotator", "label", "created_at", "duration", "cost", "stage", "confidence", "id", "distribution",
    ),
    "gold": ("item", "label", "source"),
    "predictions": ("item", "model", "model_version", "label", "probabilities", "created_at"),
    "escalations": ("item", "trigger", "routed_to", "created_at", "resolved_at"),
}

REQUIRED: dict[Kind, tuple[str, ...]] = {
    "annotations": ("item", "annotator", "label"),
    "gold": ("item", "label"),
    "predictions": ("item", "model"),
    # An escalation without its time cannot be aged or timed, so the time is required, unlike an answer's.
    "escalations": ("item", "trigger", "created_at"),
}

STAGES = ("initial", "escalated", "review", "adjudication")


def check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise LabelgovError(f"unknown ingest kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind  # type: ignore[return-value]


def parse_mapping(text: str | None) -> list[tuple[str, str]]:
    """``FIELD=COLUMN,...`` -> [(field, column)]; refuses malformed pairs."""
    if text is None or not text.strip():
        return []
    pairs = []
    for part in text.split(","):
        field, sep, column = part.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise LabelgovError(
                f"--map: {part.strip()!r} is not FIELD=COLUMN; write e.g. --map item=question,annotator=worker"
            )
        pairs.append((field.strip(), column.strip()))
    return pairs


def check_mapping(pairs: list[tuple[str, str]], kind: Kind) -> dict[str, str]:
    """Refuse fields that ``kind`` does not have and fields mapped twice."""
    allowed = KIND_FIELDS[kind]
    mapping: dict[str, str] = {}
    for field, column in pairs:
        if field not in allowed:
            raise LabelgovError(f"--map: unknown field {field!r} for {kind}; the fields are {', '.join(allowed)}")
        if field in mapping:
            raise LabelgovError(f"--map: field {field!r} is mapped twice; give each field one column")
        mapping[field] = column
    return mapping


def column_for(field: str, mapping: dict[str, str]) -> str:
    """The file column that holds ``field``: the mapped name, else the default."""
    return mapping.get(field, FIELDS[field][0])
