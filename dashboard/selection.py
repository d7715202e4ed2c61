"""From a chart selection to a narrower view.

AppTest cannot fire Plotly selections, so the mapping from Streamlit's selection payload to new
filters (or to an item to open) is this pure function, tested on its own. Charts put the ids they
stand for in ``custom_data``: the first entry of a point's ``customdata`` says what the point is.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from queries.filters import Filters

Dimension = Literal["branch", "week", "annotator", "item", "source", "segment", "tier"]


class Drill(BaseModel):
    """Where a selection leads: narrower filters, and possibly an item to open."""

    filters: Filters
    item_id: str | None = None

    def changed(self, before: Filters) -> bool:
        return self.item_id is not None or self.filters != before


def _points(selection: Any) -> list[dict[str, Any]]:
    if not selection:
        return []
    if isinstance(selection, dict):
        inner = selection.get("selection", selection)
    else:
        inner = getattr(selection, "selection", None)
    if inner is None:
        return []
    points = inner.get("points", []) if isinstance(inner, dict) else getattr(inner, "points", [])
    return [p for p in points if isinstance(p, dict)]


def _first_custom(point: dict[str, Any]) -> str | None:
    custom = point.get("customdata")
    if isinstance(custom, list | tuple):
        custom = custom[0] if custom else None
    return None if custom is None else str(custom)


def _week_start(point: dict[str, Any]) -> date | None:
    raw = _first_custom(point) or point.get("x")
    try:
        return date.fromisoformat(str(raw)[:10])
    except ValueError:
        return None


def selection_to_drill(selection: Any, dimension: Dimension, filters: Filters) -> Drill:
    """Narrow ``filters`` by the selected points; unknown or empty selections change nothing."""
    points = _points(selection)
    if not points:
        return Drill(filters=filters)
    values = [v for v in (_first_custom(p) for p in points) if v]
    update: dict[str, Any] = {}
    if dimension == "item":
        return Drill(filters=filters, item_id=values[0] if values else None)
    if dimension == "branch" and values:
        update["branch"] = values[0]
    elif dimension == "week":
        weeks = sorted(w for w in (_week_start(p) for p in points) if w)
        if weeks:
            update["start"] = weeks[0]
            update["end"] = weeks[-1] + timedelta(days=6)
    elif dimension in ("annotator", "source", "segment", "tier") and values:
        field = {"annotator": "annotators", "source": "sources", "segment": "segments", "tier": "tiers"}[dimension]
        update[field] = tuple(sorted(set(values)))
    if not update:
        return Drill(filters=filters)
    try:
        return Drill(filters=Filters.model_validate({**filters.model_dump(), **update}))
    except ValueError:
        return Drill(filters=filters)
