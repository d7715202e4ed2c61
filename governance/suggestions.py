"""Candidate tree changes with their evidence: merges of confusable siblings, splits of two-sense nodes.

Suggestions are starting points for a proposal, never changes: each row carries the numbers a steward
needs to judge it, and the merge rows include what alpha would become, so the case for a proposal can be
read before writing it.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from queries import governance_suggestions as gs
from queries.errors import LabelgovError
from queries.taxonomy import latest_version


def _version(con: duckdb.DuckDBPyConnection, version: int | None) -> int:
    found = version if version is not None else latest_version(con)
    if found is None:
        raise LabelgovError("the warehouse has no label tree yet: run `labelgov tree import FILE` first")
    return found


def merge_candidates(
    con: duckdb.DuckDBPyConnection,
    version: int | None = None,
    *,
    min_confusability: float = 0.5,
    min_items: int = 5,
) -> pd.DataFrame:
    """Sibling leaves annotators persistently confuse, most confusable first.

    ``confusability`` = o_ab / e_ab (1 means annotators choose between the two no better than chance);
    persistence is shown as the items where both were chosen, the annotators involved there and the months
    it happened in. ``alpha_if_merged`` is overall alpha with the pair read as one node.
    """
    target = _version(con, version)
    votes = gs.votes_as_of(con, target)
    pairs = gs.sibling_leaves(con, target)
    columns = [
        "a",
        "b",
        "parent_id",
        "observed",
        "expected",
        "confusability",
        "items_with_both",
        "annotators_involved",
        "months",
        "alpha",
        "alpha_if_merged",
    ]
    if votes.empty or pairs.empty:
        return pd.DataFrame(columns=columns)
    observed, expected, names = gs.coincidences(votes)
    index = {n: i for i, n in enumerate(names)}
    pairs = pairs[pairs["a"].isin(index) & pairs["b"].isin(index)].copy()
    ia, ib = pairs["a"].map(index).to_numpy(), pairs["b"].map(index).to_numpy()
    pairs["observed"] = observed[ia, ib]
    pairs["expected"] = expected[ia, ib]
    pairs["confusability"] = np.where(pairs["expected"] > 0, pairs["observed"] / pairs["expected"], np.nan)
    pairs = pairs[pairs["confusability"] >= min_confusability]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    pairs = pairs.merge(gs.pair_persistence(con, target, pairs), on=["a", "b"], how="left")
    pairs = pairs[pairs["items_with_both"].fillna(0) >= min_items].copy()
    pairs["alpha"] = gs.alpha_merging(votes)
    pairs["alpha_if_merged"] = [gs.alpha_merging(votes, {b: a}) for a, b in zip(pairs["a"], pairs["b"], strict=True)]
    return pairs.sort_values("confusability", ascending=False, kind="stable")[columns].reset_index(drop=True)


def split_candidates(
    con: duckdb.DuckDBPyConnection,
    version: int | None = None,
    *,
    min_items: int = 10,
    min_gap: float = 0.25,
    min_mode: float = 0.2,
    min_likelihood_ratio: float = 10.0,
) -> pd.DataFrame:
    """Nodes whose annotations are bimodal: near-unanimous on some items, contested on others.

    A two-rate binomial mixture must beat one rate clearly (``min_likelihood_ratio``), with rates at least
    ``min_gap`` apart and each mode holding at least ``min_mode`` of the node's items: a node contested
    everywhere is vague, not two-sense. ``top_co_label`` is what annotators chose instead on the contested
    items, the likely second sense to split out.
    """
    target = _version(con, version)
    votes = gs.votes_as_of(con, target)
    if votes.empty:
        return pd.DataFrame()
    evidence = gs.two_sense_evidence(votes)
    chosen = evidence[
        (evidence["items"] >= min_items)
        & (evidence["rate_high"] - evidence["rate_low"] >= min_gap)
        & (np.minimum(evidence["weight_low"], 1 - evidence["weight_low"]) >= min_mode)
        & (evidence["likelihood_ratio"] >= min_likelihood_ratio)
    ]
    return chosen.sort_values("likelihood_ratio", ascending=False, kind="stable").reset_index(drop=True)
