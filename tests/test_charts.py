"""Chart builders: the traces they draw, the ids they carry for drill-down, the words on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import charts

WEEKS = pd.DataFrame(
    {"week": ["2026-01-05", "2026-01-12", "2026-01-05", "2026-01-12"], "value": [0.5, 0.6, 0.7, 0.8],
     "branch": ["hate", "hate", "spam", "spam"]}
)


def test_trend_draws_one_line_per_series_with_weeks_as_ids() -> None:
    fig = charts.trend(WEEKS, "week", "value", "Alpha per week", "Alpha", series="branch")
    assert [t.name for t in fig.data] == ["hate", "spam"]
    assert list(fig.data[1].y) == [0.7, 0.8]
    assert [row[0] for row in fig.data[0].customdata] == ["2026-01-05", "2026-01-12"]
    assert fig.layout.title.text == "Alpha per week" and fig.layout.yaxis.title.text == "Alpha"


@pytest.mark.parametrize(
    "build",
    [
        lambda e: charts.trend(e, "week", "value", "T", "Y"),
        lambda e: charts.bars(e, "x", "y", "T", "X", "Y"),
        lambda e: charts.heatmap(e, "x", "y", "z", "T", "X", "Y", "Z"),
        lambda e: charts.scatter(e, "x", "y", "T", "X", "Y", ids="x"),
        lambda e: charts.frontier(e, "T"),
        lambda e: charts.reliability_diagram(e, "T"),
        lambda e: charts.curve_with_marker(e, "x", [("y", "Y")], 0.5, "T", "X"),
    ],
)
def test_every_builder_says_when_there_is_nothing_to_show(build) -> None:  # type: ignore[no-untyped-def]
    fig = build(pd.DataFrame())
    assert len(fig.data) == 0
    assert fig.layout.annotations and fig.layout.annotations[0].text.startswith("No ")


def test_bars_group_by_series_and_lead_custom_data_with_ids() -> None:
    frame = pd.DataFrame({"name": ["a", "b", "a", "b"], "acc": [0.5, 0.6, 0.9, 0.95],
                          "when": ["Before"] * 2 + ["After"] * 2, "n": [10, 20, 10, 20]})
    fig = charts.bars(frame, "name", "acc", "Accuracy", "Trigger", "Accuracy", series="when", hover=[("n", "Items")])
    assert [t.name for t in fig.data] == ["Before", "After"]
    assert fig.layout.barmode == "group"
    assert [list(r) for r in fig.data[1].customdata] == [["a", 10], ["b", 20]]
    assert "Items: %{customdata[1]}" in fig.data[0].hovertemplate
    flat = charts.bars(frame.head(2), "name", "acc", "Accuracy", "Trigger", "Accuracy", horizontal=True)
    assert flat.data[0].orientation == "h" and list(flat.data[0].y) == ["a", "b"]


def test_heatmap_pivots_long_rows_and_leaves_missing_cells_blank() -> None:
    frame = pd.DataFrame({"a": ["x", "x", "y"], "b": ["x", "y", "y"], "kappa": [1.0, 0.4, 1.0]})
    fig = charts.heatmap(frame, "b", "a", "kappa", "Kappa", "Annotator", "Annotator", "Kappa", diverging=True,
                         zmin=-1, zmax=1)
    trace = fig.data[0]
    assert trace.type == "heatmap" and list(trace.x) == ["x", "y"] and list(trace.y) == ["x", "y"]
    z = np.array(trace.z, dtype=float)
    assert z[0, 1] == 0.4 and np.isnan(z[1, 0])
    assert trace.zmid == 0 and trace.colorscale[0][1] != trace.colorscale[-1][1]


def test_sunburst_uses_remainder_values_and_skips_empty_nodes() -> None:
    nodes = pd.DataFrame({
        "node_id": ["a", "a1", "a2", "b"], "parent_id": [None, "a", "a", None], "title": ["A", "A1", "A2", "B"],
        "volume": [10.0, 6.0, 4.0, 0.0], "own": [0.0, 6.0, 4.0, 0.0], "ambiguity": [0.1, 0.2, np.nan, None],
        "items": [10, 6, 4, 0],
    })
    fig = charts.sunburst(nodes, "Tree")
    trace = fig.data[0]
    assert trace.type == "sunburst" and trace.branchvalues == "remainder"
    assert list(trace.ids) == ["a", "a1", "a2"] and list(trace.parents) == ["", "a", "a"]
    assert [row[0] for row in trace.customdata] == ["a", "a1", "a2"]
    assert list(trace.marker.colors) == [0.1, 0.2, 0.0]


def test_frontier_marks_today_and_draws_the_efficient_edge() -> None:
    points = pd.DataFrame({
        "strategy": ["redundancy_ds", "redundancy_ds", "threshold", "current"],
        "parameter": [1.0, 3.0, 0.5, np.nan],
        "cost_per_item": [0.1, 0.3, 0.2, 0.4],
        "accuracy": [0.7, 0.9, 0.8, 0.85],
        "on_frontier": [True, True, True, False],
        "is_current": [False, False, False, True],
    })
    fig = charts.frontier(points, "Frontier")
    names = [t.name for t in fig.data]
    assert names == ["redundancy_ds", "threshold", "Efficient frontier", "Today"]
    edge = fig.data[2]
    assert list(edge.x) == [0.1, 0.2, 0.3]
    assert fig.data[3].marker.symbol == "star" and list(fig.data[3].y) == [0.85]


def test_reliability_diagram_has_a_line_per_level_and_the_diagonal() -> None:
    bins = pd.DataFrame({"bin": [1, 2, 1], "mean_confidence": [0.2, 0.8, 0.5], "accuracy": [0.1, 0.9, 0.4],
                         "n": [3, 5, 2], "level": [1, 1, 2]})
    fig = charts.reliability_diagram(bins, "Calibration")
    assert [t.name for t in fig.data] == ["Level 1", "Level 2", "Perfect calibration"]
    assert list(fig.data[-1].x) == [0, 1] and list(fig.layout.xaxis.range) == [0, 1]
    assert fig.layout.xaxis.title.text == "Stated confidence"


def test_interval_bars_error_bars_reach_the_bounds() -> None:
    frame = pd.DataFrame({"who": ["a", "b", "c"], "acc": [0.8, np.nan, 0.5], "lo": [0.6, np.nan, 0.3],
                          "hi": [0.9, np.nan, 0.8]})
    fig = charts.interval_bars(frame, "who", "acc", "lo", "hi", "Accuracy", "Annotator", "Accuracy", ids="who",
                               empty="No gold")
    trace = fig.data[0]
    assert list(trace.x) == ["a", "c"]
    assert list(trace.error_y.array) == pytest.approx([0.1, 0.3])
    assert list(trace.error_y.arrayminus) == pytest.approx([0.2, 0.2])
    none = charts.interval_bars(frame.iloc[1:2], "who", "acc", "lo", "hi", "Accuracy", "Annotator", "Accuracy",
                                ids="who", empty="No gold labels here")
    assert not none.data and none.layout.annotations[0].text == "No gold labels here"


def test_curve_with_marker_puts_the_second_curve_on_its_own_axis() -> None:
    curve = pd.DataFrame({"t": [0.3, 0.5, 0.7], "acc": [0.8, 0.85, 0.9], "cost": [0.2, 0.3, 0.5]})
    fig = charts.curve_with_marker(curve, "t", [("acc", "Accuracy"), ("cost", "Cost")], 0.5, "What-if", "Threshold")
    assert [t.yaxis for t in fig.data] == ["y", "y2"]
    assert fig.layout.yaxis2.overlaying == "y"
    assert fig.layout.shapes[0].x0 == 0.5


def test_palette_is_colour_blind_safe_okabe_ito() -> None:
    fig = charts.trend(WEEKS, "week", "value", "Alpha per week", "Alpha", series="branch")
    assert list(fig.layout.colorway) == charts.OKABE_ITO
    marked = charts.mark_weeks(fig, ["2026-01-12"], "tree changed")
    assert marked.layout.shapes[0].x0 == "2026-01-12"
    assert marked.layout.annotations[-1].text == "tree changed"
