"""The one filter model every page and every analytic function takes.

Values reach SQL only as bound parameters; the filter decides the *shape* of the WHERE clause from which
fields are set, never from their content, so an arbitrary string in any field cannot change the SQL.
The same model round-trips through URL query parameters so that a dashboard view can be bookmarked.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from queries.errors import LabelgovError

# Table aliases a caller may ask the predicate to be written against.
ALIASES = frozenset({"a", "c", "d_answers", "o", "x"})
TUPLE_FIELDS = ("sources", "segments", "tiers", "annotators", "stages")
STAGES = frozenset({"initial", "escalated", "review", "adjudication"})
NODE_ID = re.compile(r"^[a-z0-9_-]+$")


# Value sets up to this size are tested in each row rather than joined (see Filters._in_value_sets).
LISTED_VALUES = 8

# The fields that choose items (an item's source, segment and consensus branch); all others choose answers.
ITEM_LEVEL_FIELDS = frozenset({"branch", "sources", "segments"})


class Filters(BaseModel):
    """Date range (inclusive), tree version, branch (a node and its subtree), and value sets.

    ``tree_version`` keeps the answers given under that version of the tree (every answer is still
    shown mapped to the version the analytics are computed in).

    ``branch`` is an item-level filter: an item belongs to a branch when its consensus node (the
    plurality answer, computed at refresh) lies in that node's subtree. Filtering answers instead would
    drop exactly the disagreeing answers that the analyses are about.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: date | None = None
    end: date | None = None
    tree_version: int | None = Field(default=None, ge=1)
    branch: str | None = None
    sources: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    annotators: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()

    @field_validator("branch")
    @classmethod
    def _node_id(cls, value: str | None) -> str | None:
        if value is not None and not NODE_ID.match(value):
            raise ValueError("branch must be a node id ([a-z0-9_-]+)")
        return value

    @field_validator("stages")
    @classmethod
    def _known_stages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - STAGES)
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(sorted(STAGES))}")
        return tuple(sorted(set(value)))

    @field_validator("sources", "segments", "tiers", "annotators")
    @classmethod
    def _sorted_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _ordered_dates(self) -> Filters:
        if self.start and self.end and self.start > self.end:
            raise ValueError("the start date is after the end date")
        return self

    def where(self, alias: str = "a") -> tuple[str, list[Any]]:
        """A predicate over ``d_answers`` columns and its parameters, ``TRUE`` when nothing is set."""
        if alias not in ALIASES:
            raise ValueError(f"alias {alias!r} is not in the allow-list")
        p = alias + "."
        parts: list[str] = []
        params: list[Any] = []
        if self.start is not None:
            parts.append(p + "created_at >= ?")
            params.append(self.start)
        if self.end is not None:
            parts.append(p + "created_at < CAST(? AS DATE) + INTERVAL 1 DAY")
            params.append(self.end)
        if self.tree_version is not None:
            parts.append(p + "source_version = ?")
            params.append(self.tree_version)
        if self.branch is not None:
            # A semi-join on the items rather than a lineage copied onto every answer: d_items is a tenth
            # of d_answers' size and the answers table stays narrow.
            in_branch = "item_idx IN (SELECT d.item_idx FROM d_items d WHERE list_contains(d.consensus_lineage, ?))"
            parts.append(p + in_branch)
            params.append(self.branch)
        in_sets, set_params = self._in_value_sets(p)
        return " AND ".join([*parts, *in_sets]) if parts or in_sets else "TRUE", [*params, *set_params]

    def answers_from(self, joined: str = "") -> tuple[str, list[Any]]:
        """``d_answers a`` (with ``joined``, a fixed join clause) restricted to the filters, as a FROM clause
        ending in its WHERE predicate, and its parameters.

        ``where`` writes the branch as ``item_idx IN (items of the branch)``, which DuckDB runs as a mark join
        costing a third more than the scan itself (10M answers); the same items joined on the integer index are
        a plain hash join, as cheap as the scan. d_items holds one row per item_idx, so the join keeps exactly
        the answers the semi-join keeps.
        """
        if self.branch is None:
            pred, params = self.where("a")
            return "d_answers a " + joined + " WHERE " + pred, params
        pred, params = self.model_copy(update={"branch": None}).where("a")
        return (
            "d_answers a " + joined + " JOIN (SELECT d.item_idx FROM d_items d "  # noqa: S608 - fixed join, the predicate from where
            "WHERE list_contains(d.consensus_lineage, ?)) b ON b.item_idx = a.item_idx WHERE " + pred,
            [self.branch, *params],
        )

    def _in_value_sets(self, p: str) -> tuple[list[str], list[Any]]:
        """``column IN (values)`` for every value set that is given; the same columns in the answers and cells.

        A few values are tested in the row (``list_contains``), which DuckDB evaluates as a filter during the
        scan; more (an annotator list) become a hash semi-join, which costs a join per statement (a third of
        a scan of ten million answers) but does not grow with the number of values."""
        parts: list[str] = []
        params: list[Any] = []
        for field, column in (
            ("sources", "source"),
            ("segments", "segment"),
            ("tiers", "tier"),
            ("annotators", "annotator_id"),
            ("stages", "stage"),
        ):
            values = getattr(self, field)
            if values:
                few = len(values) <= LISTED_VALUES
                parts.append("list_contains(?, " + p + column + ")" if few else p + column + " IN (SELECT unnest(?))")
                params.append(list(values))
        return parts, params

    def cell_where(self, alias: str = "c") -> tuple[str, list[Any]] | None:
        """A predicate over a table of additive counts per cell, or None when only the answers can tell.

        A cell is (week, source, segment, consensus_node, tier, stage) with ``by_tier`` / ``by_stage``
        saying whether the cell splits by tier / stage (queries.overview's weekly cells). Items partition by
        their own attributes (source, segment, consensus node), so item counts add up over any number of
        those values; an item with answers of two tiers (or stages) sits in two cells, so at most one tier
        and one stage can be asked for. Dates must cover whole weeks (Monday to Sunday), the cells' grain;
        tree version and annotators are not cell columns.
        """
        if alias not in ALIASES:
            raise ValueError(f"alias {alias!r} is not in the allow-list")
        monday = self.start is None or self.start.weekday() == 0
        sunday = self.end is None or self.end.weekday() == 6
        if not (monday and sunday) or self.tree_version is not None or self.annotators:
            return None
        if len(self.tiers) > 1 or len(self.stages) > 1:
            return None
        p = alias + "."
        parts = [p + "by_tier = ?", p + "by_stage = ?"]
        params: list[Any] = [bool(self.tiers), bool(self.stages)]
        if self.start is not None:
            parts.append(p + "week >= ?")
            params.append(self.start)
        if self.end is not None:
            parts.append(p + "week < CAST(? AS DATE) + INTERVAL 1 DAY")
            params.append(self.end)
        if self.branch is not None:
            parts.append(
                p + "consensus_node IN (SELECT n.node_id FROM d_nodes n WHERE n.tree_version = "  # noqa: S608 - allow-listed alias
                + p + "tree_version AND list_contains(n.lineage, ?))"
            )
            params.append(self.branch)
        in_sets, set_params = self._in_value_sets(p)
        return " AND ".join([*parts, *in_sets]), [*params, *set_params]

    def is_empty(self) -> bool:
        return self == Filters()

    def answer_fields(self) -> list[str]:
        """The active fields that choose answers (dates, tree version, tiers, annotators, stages): a per-item
        result can only read them as "the items with such answers", and pages say so, lest a tier filter that
        keeps every item look like one that changed nothing by accident."""
        return sorted(set(self.model_dump(exclude_defaults=True)) - ITEM_LEVEL_FIELDS)

    def to_query_params(self) -> dict[str, str]:
        """Only the fields that are set, as strings, for st.query_params."""
        out: dict[str, str] = {}
        for name, value in self.model_dump(exclude_defaults=True).items():
            out[name] = ",".join(value) if isinstance(value, tuple | list) else str(value)
        return out

    @classmethod
    def from_query_params(cls, params: dict[str, str | list[str]]) -> Filters:
        """Parse URL parameters; unknown keys are ignored, bad values raise LabelgovError."""
        data: dict[str, Any] = {}
        for name in cls.model_fields:
            if name not in params:
                continue
            raw = params[name]
            text = raw[-1] if isinstance(raw, list) else raw
            if name in TUPLE_FIELDS:
                data[name] = tuple(v for v in text.split(",") if v)
            elif text != "":
                data[name] = text
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "filters"
            raise LabelgovError(f"filter {where}: {first['msg']}") from exc
