"""Chart builders: pure functions from a DataFrame to a Plotly figure.

One look across the app: the Okabe-Ito palette (distinguishable with every common colour-vision
deficiency) for categories, a sequential blue scale for magnitudes and a diverging scale for signed
changes; plain-word titles and axis labels; numbers in the hover text. Every builder copes with an
empty frame by returning a figure that says there is nothing to show.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import plotly.graph_objects as go

OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
SEQUENTIAL = "Blues"
DIVERGING = "RdBu_r"
FONT = "sans-serif"


def base_layout(fig: go.Figure, title: str, x_title: str | None = None, y_title: str | None = None) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        colorway=OKABE_ITO,
        font={"family": FONT, "size": 13},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        legend={"orientation": "h", "y": -0.2},
        hoverlabel={"namelength": -1},
    )
    if x_title is not None:
        fig.update_xaxes(title_text=x_title)
    if y_title is not None:
        fig.update_yaxes(title_text=y_title)
    return fig


def empty_figure(title: str, message: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return base_layout(fig, title)


def _series(
    frame: pd.DataFrame, series: str | None, name: str, sort: bool = True
) -> Iterable[tuple[object, pd.DataFrame]]:
    """One (name, rows) pair per value of ``series``, or the whole frame under ``name``: one trace each."""
    return frame.groupby(series, sort=sort) if series else [(name, frame)]


def trend(frame: pd.DataFrame, x: str, y: str, title: str, y_title: str, series: str | None = None) -> go.Figure:
    """Lines over time; one line per value of ``series``; ``x`` values go in custom_data for drill-down."""
    if frame.empty:
        return empty_figure(title, "No data for these filters")
    fig = go.Figure()
    for name, part in _series(frame, series, y_title):
        part = part.sort_values(x)
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part[y],
                mode="lines+markers",
                name=str(name),
                customdata=part[[x]].astype(str).to_numpy(),
                hovertemplate="%{x|%Y-%m-%d}<br>" + y_title + ": %{y:.3f}<extra>%{fullData.name}</extra>",
            )
        )
    return base_layout(fig, title, "Week", y_title)


def _hover_tail(columns: list[tuple[str, str]]) -> str:
    """The end of a hover text: a line "Label: value" per extra custom_data column (they follow the drill-down
    id at position 0), then the trace name."""
    lines = "".join(f"<br>{label}: %{{customdata[{1 + i}]}}" for i, (_, label) in enumerate(columns))
    return lines + "<extra>%{fullData.name}</extra>"


def _custom(frame: pd.DataFrame, columns: list[str]) -> list[list[object]]:
    """custom_data rows with numbers rounded for reading: the first column stays the drill-down id."""
    part = frame[columns].copy()
    for col in columns[1:]:
        if pd.api.types.is_float_dtype(part[col]):
            part[col] = part[col].round(3)
    return part.astype(object).where(part.notna(), "n/a").to_numpy().tolist()


def bars(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    x_title: str,
    y_title: str,
    ids: str | None = None,
    series: str | None = None,
    horizontal: bool = False,
    hover: list[tuple[str, str]] | None = None,
) -> go.Figure:
    """Bars, grouped per ``series``; the ``ids`` column leads custom_data so a click can drill down."""
    if frame.empty:
        return empty_figure(title, "No data for these filters")
    extra = hover or []
    fig = go.Figure()
    for name, part in _series(frame, series, y_title, sort=False):
        custom = _custom(part, [ids or x, *[c for c, _ in extra]])
        value = "%{x:.3f}" if horizontal else "%{y:.3f}"
        label = "%{y}" if horizontal else "%{x}"
        fig.add_trace(
            go.Bar(
                x=part[y] if horizontal else part[x],
                y=part[x] if horizontal else part[y],
                orientation="h" if horizontal else "v",
                name=str(name),
                customdata=custom,
                hovertemplate=label + "<br>" + y_title + ": " + value + _hover_tail(extra),
            )
        )
    fig.update_layout(barmode="group")
    if horizontal:
        fig.update_yaxes(autorange="reversed")
        return base_layout(fig, title, y_title, x_title)
    return base_layout(fig, title, x_title, y_title)


def heatmap(
    frame: pd.DataFrame,
    x: str,
    y: str,
    z: str,
    title: str,
    x_title: str,
    y_title: str,
    z_title: str,
    diverging: bool = False,
    zmin: float | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """A matrix from long rows (x, y, z); missing cells stay blank rather than pretending to be zero."""
    if frame.empty:
        return empty_figure(title, "No data for these filters")
    matrix = frame.pivot_table(index=y, columns=x, values=z, aggfunc="first", sort=False)
    fig = go.Figure(
        go.Heatmap(
            z=matrix.to_numpy(dtype=float),
            x=[str(c) for c in matrix.columns],
            y=[str(i) for i in matrix.index],
            colorscale=DIVERGING if diverging else SEQUENTIAL,
            zmid=0 if diverging else None,
            zmin=zmin,
            zmax=zmax,
            colorbar={"title": {"text": z_title}},
            hovertemplate=y_title + ": %{y}<br>" + x_title + ": %{x}<br>" + z_title + ": %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    return base_layout(fig, title, x_title, y_title)


def sunburst(nodes: pd.DataFrame, title: str, colour: str = "ambiguity", colour_title: str = "Ambiguity") -> go.Figure:
    """The label tree sized by volume (``own`` with remainder branch values) and coloured by ``colour``."""
    shown = nodes[nodes["volume"] > 0]
    if shown.empty:
        return empty_figure(title, "No labels for these filters")
    fig = go.Figure(
        go.Sunburst(
            ids=shown["node_id"],
            labels=shown["title"],
            parents=shown["parent_id"].fillna(""),
            values=shown["own"],
            branchvalues="remainder",
            marker={
                "colors": shown[colour].fillna(0),
                "colorscale": "Cividis",
                "cmin": 0,
                "colorbar": {"title": {"text": colour_title}},
            },
            customdata=_custom(shown, ["node_id", "volume", colour, "items"]),
            hovertemplate="%{label} (%{customdata[0]})<br>Volume: %{customdata[1]}<br>"
            + colour_title + ": %{customdata[2]}<br>Items touching it: %{customdata[3]}<extra></extra>",
            maxdepth=3,
        )
    )
    fig.update_layout(height=560)
    return base_layout(fig, title)


def scatter(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    x_title: str,
    y_title: str,
    ids: str,
    series: str | None = None,
    hover: list[tuple[str, str]] | None = None,
    lines: bool = False,
) -> go.Figure:
    """Points (or lines through them) with ids in custom_data; one trace per ``series`` value."""
    if frame.empty:
        return empty_figure(title, "No data for these filters")
    extra = hover or []
    fig = go.Figure()
    for name, part in _series(frame, series, y_title):
        part = part.sort_values(x) if lines else part
        fig.add_trace(
            go.Scatter(
                x=part[x],
                y=part[y],
                mode="lines+markers" if lines else "markers",
                name=str(name),
                customdata=_custom(part, [ids, *[c for c, _ in extra]]),
                hovertemplate="%{customdata[0]}<br>" + x_title + ": %{x:.3f}<br>" + y_title + ": %{y:.3f}"
                + _hover_tail(extra),
            )
        )
    return base_layout(fig, title, x_title, y_title)


def frontier(points: pd.DataFrame, title: str) -> go.Figure:
    """Every strategy's (cost, accuracy) points, the efficient frontier as a line, today's point as a star."""
    if points.empty:
        return empty_figure(title, "No gold labels to measure accuracy against")
    others = points[~points["is_current"]]
    fig = scatter(
        others, "cost_per_item", "accuracy", title, "Cost per item", "Accuracy on gold", ids="strategy",
        series="strategy", hover=[("parameter", "Setting")],
    )
    edge = points[points["on_frontier"]].sort_values("cost_per_item")
    fig.add_trace(
        go.Scatter(
            x=edge["cost_per_item"], y=edge["accuracy"], mode="lines", name="Efficient frontier",
            line={"color": "#000000", "dash": "dot"}, hoverinfo="skip",
        )
    )
    now = points[points["is_current"]]
    if not now.empty:
        fig.add_trace(
            go.Scatter(
                x=now["cost_per_item"], y=now["accuracy"], mode="markers", name="Today",
                marker={"symbol": "star", "size": 18, "color": OKABE_ITO[5]},
                customdata=_custom(now, ["strategy"]),
                hovertemplate="Today<br>Cost per item: %{x:.3f}<br>Accuracy: %{y:.3f}<extra></extra>",
            )
        )
    return fig


def reliability_diagram(bins: pd.DataFrame, title: str) -> go.Figure:
    """The model's accuracy against its stated confidence per bin, one line per tree level."""
    levels = bins.assign(level_name="Level " + bins["level"].astype(str)) if not bins.empty else bins
    return stated_confidence_diagram(levels, title, "level_name", "Observed accuracy",
                                     "No gold labels with predictions in scope", counted="Items in bin")


def stated_confidence_diagram(
    bins: pd.DataFrame, title: str, series: str, y_title: str, empty: str, counted: str = "Answers in bin"
) -> go.Figure:
    """Share right against stated confidence per bin, one line per ``series`` value (tree levels, annotator
    tiers), with the perfect diagonal; ``empty`` says why nothing shows."""
    if bins.empty:
        return empty_figure(title, empty)
    fig = scatter(
        bins, "mean_confidence", "accuracy", title, "Stated confidence", y_title, ids=series,
        series=series, hover=[("n", counted)], lines=True,
    )
    fig.add_trace(
        go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="Perfect calibration",
                   line={"color": "#7f7f7f", "dash": "dash"}, hoverinfo="skip")
    )
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return fig


def interval_bars(
    frame: pd.DataFrame,
    x: str,
    y: str,
    low: str,
    high: str,
    title: str,
    x_title: str,
    y_title: str,
    ids: str,
    empty: str,
) -> go.Figure:
    """Point estimates with their intervals as error bars, ids in custom_data; ``empty`` says why none show."""
    shown = frame.dropna(subset=[y])
    if shown.empty:
        return empty_figure(title, empty)
    fig = go.Figure(
        go.Scatter(
            x=shown[x],
            y=shown[y],
            mode="markers",
            name=y_title,
            error_y={"type": "data", "symmetric": False, "array": shown[high] - shown[y],
                     "arrayminus": shown[y] - shown[low]},
            customdata=_custom(shown, [ids, low, high]),
            hovertemplate="%{customdata[0]}<br>" + y_title + ": %{y:.3f} (%{customdata[1]} to %{customdata[2]})"
            "<extra></extra>",
        )
    )
    return base_layout(fig, title, x_title, y_title)


def curve_with_marker(
    frame: pd.DataFrame, x: str, ys: list[tuple[str, str]], at: float, title: str, x_title: str
) -> go.Figure:
    """Several curves over one x (each on its own axis when two), with a vertical line where ``at`` is."""
    if frame.empty:
        return empty_figure(title, "No data for these filters")
    fig = go.Figure()
    for i, (column, label) in enumerate(ys):
        fig.add_trace(
            go.Scatter(
                x=frame[x], y=frame[column], mode="lines", name=label, yaxis="y" if i == 0 else "y2",
                customdata=frame[[x]].to_numpy(),
                hovertemplate=x_title + ": %{x:.3f}<br>" + label + ": %{y:.3f}<extra></extra>",
            )
        )
    if len(ys) > 1:
        fig.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": {"text": ys[1][1]}})
    fig.add_vline(x=at, line_dash="dash", line_color=OKABE_ITO[5])
    return base_layout(fig, title, x_title, ys[0][1])


def mark_weeks(fig: go.Figure, weeks: list[str], label: str) -> go.Figure:
    """Vertical marks (e.g. where the tree version changed) on a chart whose x axis is weeks."""
    for week in weeks:
        fig.add_vline(x=week, line_dash="dot", line_color="#000000")
        fig.add_annotation(x=week, y=1, yref="paper", text=label, showarrow=False, yanchor="bottom")
    return fig
