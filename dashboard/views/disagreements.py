"""Disagreement explorer: the most contested items, and one item with everything known about it."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from dashboard import access, charts
from dashboard.components import (
    ITEM_ID,
    ITEM_PARAM,
    empty_state,
    go_to,
    guarded,
    narrowed,
    selected_value,
    table,
)
from queries import contested
from queries.filters import Filters

SORTS = {"Entropy (most split)": "entropy", "Gap (closest call)": "gap", "Posterior (least certain truth)": "posterior"}
HANDLED = "dis_handled_row"


def opened_item() -> str | None:
    """The item in the URL, if it is a well-formed id; a malformed one is reported and dropped."""
    raw = st.query_params.get(ITEM_PARAM)
    if not raw:
        return None
    if not ITEM_ID.match(raw):
        st.warning("Ignored the link's item: an item id is up to 200 letters, digits and . : @ / + - _")
        del st.query_params[ITEM_PARAM]
        return None
    return raw


def _selected_row(event: Any) -> int | None:
    rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
    return int(rows[0]) if rows else None


def annotator_view(event: Any, annotations: pd.DataFrame, filters: Filters) -> Filters | None:
    """The filters that open the Annotators page on the annotator of the selected answer, None without one."""
    who = selected_value(event, annotations, "annotator_id")
    return None if who is None else narrowed(filters, annotators=(who,))


# With an annotator filter, what their items are ranked on (contested_items' ``everyone``).
SCORED_ON = {"Everyone's answers on their items": True, "Only their answers": False}


def annotator_caveat(filters: Filters, sort: str, everyone: bool) -> str | None:
    """Why a ranking on only an annotator filter's answers reads differently: entropy and gap then measure how
    they disagree with themselves, not how contested the item is."""
    if not filters.annotators or sort == "posterior" or everyone:
        return None
    who = ", ".join(filters.annotators)
    return (f"Entropy and gap count only the answers of {who}: one annotator's answers on an item rarely split, "
            "so this lists their items rather than the ones everybody disputes. Rank on everyone's answers, or by "
            "posterior, to put first their items that are really disputed.")


def _ranking(filters: Filters) -> None:
    left, right = st.columns([2, 1])
    sort = SORTS[left.radio("Rank by", list(SORTS), horizontal=True, key="dis_sort")]
    limit = right.number_input("Items", min_value=10, max_value=2000, value=200, step=50, key="dis_limit")
    everyone = False
    if filters.annotators:
        everyone = SCORED_ON[st.radio("Rank the annotators' items on", list(SCORED_ON), horizontal=True,
                                      key="dis_scored_on")]
    caveat = annotator_caveat(filters, sort, everyone)
    if caveat is not None:
        st.caption(caveat)
    items = access.query(contested.contested_items, filters, limit=int(limit), sort=sort, everyone=everyone)
    if items.empty:
        empty_state("No items match these filters.", "Widen them, or ingest annotations and run `labelgov refresh`.")
        return
    st.caption("Select a row to open the item.")
    event = table(items, "contested_items", filters, key="dis_table", on_select="rerun", selection_mode="single-row")
    row = _selected_row(event)
    if row is not None and st.session_state.get(HANDLED) != (row, sort):
        st.session_state[HANDLED] = (row, sort)
        st.query_params[ITEM_PARAM] = str(items.iloc[row]["item_id"])
        st.rerun()


def _levels_chart(mass: pd.DataFrame, title: str, value: str) -> None:
    frame = mass.assign(level="Level " + mass["depth"].astype(str), label=mass["title"].fillna(mass["node_id"]))
    fig = charts.bars(frame, "label", value, title, "Node", "Share of the item's labels", ids="node_id",
                      series="level", horizontal=True)
    st.plotly_chart(fig, key="dis_chart_" + value + title)


def _item(item_id: str, filters: Filters) -> None:
    detail = access.call(contested.item_detail, item_id)
    st.subheader(f"Item {item_id}")
    if st.button("Close item", key="dis_close"):
        del st.query_params[ITEM_PARAM]
        st.rerun()
    facts = detail.item
    cols = st.columns(4)
    cols[0].metric("Answers", f"{int(facts['answers'])}")
    cols[1].metric("Consensus", str(facts["consensus_node"]))
    cols[2].metric("Consensus share", f"{float(facts['consensus_share']):.0%}")
    cols[3].metric("Source / segment", f"{facts['source']} / {facts['segment']}")
    st.markdown("**Every annotation** (reliability is the annotator's Dawid-Skene accuracy; select a row to open "
                "its annotator)")
    event = table(detail.annotations, f"item_{item_id}_annotations", filters, key="dis_item_answers",
                  on_select="rerun", selection_mode="single-row")
    person = annotator_view(event, detail.annotations, filters)
    if person is not None:
        go_to("annotators", person)
    left, right = st.columns(2)
    with left:
        _levels_chart(detail.mass, "Soft label per level (answers)", "mass")
    with right:
        if detail.posterior_mass.empty:
            empty_state("No latent-truth posterior for this item.", "Run `labelgov refresh` to fit the model.")
        else:
            _levels_chart(detail.posterior_mass, "Posterior per level (Dawid-Skene)", "mass")
    left, right = st.columns(2)
    with left:
        st.markdown("**Model prediction** (top leaves)")
        if detail.model.empty:
            empty_state("No model prediction for this item.", "Ingest predictions with `labelgov ingest predictions`.")
        else:
            table(detail.model, f"item_{item_id}_model", filters, key="dis_item_model")
        st.markdown("**Gold label**")
        if detail.gold.empty:
            st.caption("No gold label for this item.")
        else:
            table(detail.gold, f"item_{item_id}_gold", filters, key="dis_item_gold")
    with right:
        st.markdown("**Escalation history**")
        if detail.escalations.empty:
            st.caption("This item was never escalated.")
        else:
            table(detail.escalations, f"item_{item_id}_escalations", filters, key="dis_item_escalations")
        st.markdown("**Posterior over leaves**")
        table(detail.posterior, f"item_{item_id}_posterior", filters, key="dis_item_posterior")


def render(filters: Filters) -> None:
    st.title("Disagreements")
    item = opened_item()
    if item is not None:
        with guarded(f"Loading item {item}…"):
            _item(item, filters)
        st.divider()
    with guarded("Ranking the contested items…"):
        _ranking(filters)
