"""Chart builders: pure functions from a DataFrame to a Plotly figure.

One look across the app: the Okabe-Ito palette (distinguishable with every common colour-vision
deficiency) for categories, a sequential blue scale for magnitudes and a diverging scale for signed
changes; plain-word titles and axis labels; numbers in the hover text. Every builder copes with an
empty frame by returning a figure that says there is nothing to show.
"""

from __future__ import annotations

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


def trend(frame: pd.DataFrame, x: str, y: str, title: str, y_title: str, series: str | None = None) -> go.Figure:
    """Lines over time; one line per value of ``series``; ``x`` values go in custom_data for drill-down."""
    if frame.empty:
        return empty_figure(title, "No data for these filters")
    fig = go.Figure()
    groups = frame.groupby(series, sort=True) if series else [(y_title, frame)]
    for name, part in groups:
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
