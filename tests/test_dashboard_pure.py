"""Pure parts of the dashboard: roles, URL round trip, selection mapping."""

from __future__ import annotations

from datetime import date

import pytest

from dashboard.navigation import PAGES, ROLE_PAGES, may_open, pages_for
from dashboard.selection import selection_to_drill
from governance.roles import Role
from queries.errors import LabelgovError
from queries.filters import Filters


def test_roles_see_their_pages_only() -> None:
    leadership = {s.key for specs in pages_for(Role.LEADERSHIP).values() for s in specs}
    assert leadership == {"overview", "cost_quality", "drift"}
    analyst = {s.key for specs in pages_for(Role.ANALYST).values() for s in specs}
    assert {"disagreements", "annotators", "calibration"} <= analyst
    assert "governance" not in analyst and "audit" not in analyst
    assert may_open(Role.STEWARD, "governance") and may_open(Role.STEWARD, "audit")
    assert not may_open(Role.VIEWER, "governance")
    assert all(key in PAGES for pages in ROLE_PAGES.values() for key in pages)


def test_filters_round_trip_through_query_params() -> None:
    f = Filters(start=date(2026, 1, 5), end=date(2026, 2, 1), tree_version=2, branch="hate", tiers=("b", "a"))
    params = f.to_query_params()
    assert all(isinstance(v, str) for v in params.values())
    assert Filters.from_query_params(params) == f
    assert Filters.from_query_params({}) == Filters()


@pytest.mark.parametrize(
    "params",
    [{"start": "yesterday"}, {"tree_version": "-1"}, {"branch": "Robert'); DROP TABLE items;--"}, {"stages": "x"}],
)
def test_bad_query_params_give_one_clear_error(params: dict[str, str]) -> None:
    with pytest.raises(LabelgovError, match="filter"):
        Filters.from_query_params(params)


def test_selection_on_branch_week_annotator_and_item() -> None:
    base = Filters(segments=("en",))
    event = {"selection": {"points": [{"customdata": ["hate_speech"], "x": 1}]}}
    assert selection_to_drill(event, "branch", base).filters == Filters(segments=("en",), branch="hate_speech")
    weeks = {"selection": {"points": [{"x": "2026-03-02"}, {"x": "2026-02-23"}]}}
    drill = selection_to_drill(weeks, "week", base)
    assert (drill.filters.start, drill.filters.end) == (date(2026, 2, 23), date(2026, 3, 8))
    people = {"selection": {"points": [{"customdata": ["w-2"]}, {"customdata": ["w-1"]}]}}
    assert selection_to_drill(people, "annotator", base).filters.annotators == ("w-1", "w-2")
    item = selection_to_drill({"selection": {"points": [{"customdata": ["item-7", 0.4]}]}}, "item", base)
    assert item.item_id == "item-7" and item.filters == base


def test_empty_or_invalid_selection_changes_nothing() -> None:
    base = Filters(branch="spam")
    assert selection_to_drill(None, "branch", base).filters == base
    assert selection_to_drill({"selection": {"points": []}}, "week", base).filters == base
    bad = {"selection": {"points": [{"customdata": ["NOT A NODE"]}]}}
    assert not selection_to_drill(bad, "branch", base).changed(base)
