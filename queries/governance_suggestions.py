"""Evidence for tree changes found in the annotations themselves: confusable siblings and two-sense nodes.

Both read every annotation as of one tree version. Confusability of two siblings compares how often
they are given to the same item (Krippendorff's coincidence o_ab) with how often they would be if
annotators chose at random with the observed label frequencies (e_ab = n_a n_b / (n - 1)): siblings
people tell apart have o_ab far below e_ab, siblings people cannot tell apart approach or exceed it.
A node used in two senses shows up as items where annotators are nearly unanimous on it next to items
where it is contested: a two-rate binomial mixture then fits the per-item vote counts far better than one
shared rate, with both rates far apart and both holding a real share of the items.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from queries.alpha import alpha_from_counts

CONTESTED_AT = 0.6
CLEAR_AT = 0.8


def votes_as_of(con: duckdb.DuckDBPyConnection, version: int) -> pd.DataFrame:
    """Per item and node (as of ``version``): item (dense index), item_id, node, n. Sorted."""
    return con.execute(
        """
        SELECT dense_rank() OVER (ORDER BY item_id) - 1 AS item, item_id, node, n
        FROM (SELECT a.item_id, m.target_node_id AS node, count(*) AS n
              FROM annotations a
              JOIN as_of_mapping(?) m ON m.tree_version = a.tree_version AND m.node_id = a.node_id
              GROUP BY ALL)
        ORDER BY item, node
        """,
        [version],
    ).df()


def sibling_leaves(con: duckdb.DuckDBPyConnection, version: int) -> pd.DataFrame:
    """Pairs of active leaves under the same parent (or both at the top): a, b, parent_id."""
    return con.execute(
        """
        SELECT x.node_id AS a, y.node_id AS b, x.parent_id
        FROM tree_nodes x JOIN tree_nodes y
          ON y.tree_version = x.tree_version AND y.parent_id IS NOT DISTINCT FROM x.parent_id AND x.node_id < y.node_id
        WHERE x.tree_version = ? AND x.status = 'active' AND y.status = 'active' AND x.is_leaf AND y.is_leaf
        ORDER BY a, b
        """,
        [version],
    ).df()


def pair_persistence(con: duckdb.DuckDBPyConnection, version: int, pairs: pd.DataFrame) -> pd.DataFrame:
    """For each pair: items where both were chosen, annotators involved there, and months it happened in."""
    con.register("_gov_pairs", pairs[["a", "b"]])
    try:
        return con.execute(
            """
            WITH ann AS (
                SELECT a.item_id, a.annotator_id, m.target_node_id AS node, date_trunc('month', a.created_at) AS month
                FROM annotations a
                JOIN as_of_mapping(?) m ON m.tree_version = a.tree_version AND m.node_id = a.node_id
            ),
            both_items AS (
                SELECT p.a, p.b, x.item_id FROM _gov_pairs p
                JOIN ann x ON x.node = p.a JOIN ann y ON y.item_id = x.item_id AND y.node = p.b
                GROUP BY ALL
            )
            SELECT bi.a, bi.b, count(DISTINCT bi.item_id) AS items_with_both,
                   count(DISTINCT z.annotator_id) AS annotators_involved, count(DISTINCT z.month) AS months
            FROM both_items bi JOIN ann z ON z.item_id = bi.item_id AND (z.node = bi.a OR z.node = bi.b)
            GROUP BY ALL ORDER BY bi.a, bi.b
            """,
            [version],
        ).df()
    finally:
        con.unregister("_gov_pairs")


def _codes(votes: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    codes, names = pd.factorize(votes["node"], sort=True)
    return codes, [str(n) for n in names]


def coincidences(votes: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Observed coincidence matrix o and its chance expectation e over pairable items, with node names."""
    codes, names = _codes(votes)
    k = len(names)
    m = np.bincount(votes["item"], weights=votes["n"])
    keep = m[votes["item"]] >= 2
    item, value, n = votes["item"].to_numpy()[keep], codes[keep], votes["n"].to_numpy(dtype=float)[keep]
    counts = np.zeros((int(item.max()) + 1 if item.size else 0, k))
    np.add.at(counts, (item, value), n)
    weight = 1.0 / np.maximum(counts.sum(axis=1) - 1.0, 1.0)
    observed = (counts * weight[:, None]).T @ counts
    np.fill_diagonal(observed, observed.diagonal() - (counts * weight[:, None]).sum(axis=0))
    totals = counts.sum(axis=0)
    expected = np.outer(totals, totals) / max(totals.sum() - 1.0, 1.0)
    return observed, expected, names


def alpha_merging(votes: pd.DataFrame, merge: dict[str, str] | None = None) -> float:
    """Nominal alpha with some nodes read as others (``merge``: node -> node), None meaning as recorded."""
    nodes = votes["node"].replace(merge) if merge else votes["node"]
    grouped = votes.assign(node=nodes).groupby(["item", "node"], sort=True)["n"].sum().reset_index()
    codes, _ = _codes(grouped)
    return alpha_from_counts(grouped["item"].to_numpy(), codes, grouped["n"].to_numpy(), int(codes.max()) + 1)


def binomial_mixture(k: np.ndarray, m: np.ndarray, iterations: int = 200) -> tuple[float, float, float, float]:
    """Two-rate binomial mixture by EM: (low rate, high rate, weight of low, likelihood-ratio vs one rate)."""
    k, m = k.astype(float), m.astype(float)
    one = float(k.sum() / m.sum())
    rates = np.clip(np.quantile(k / m, [0.25, 0.75]) + np.array([-0.01, 0.01]), 0.01, 0.99)
    weights = np.array([0.5, 0.5])
    for _ in range(iterations):
        like = weights * stats.binom.pmf(k[:, None], m[:, None], rates)
        resp = like / np.maximum(like.sum(axis=1, keepdims=True), 1e-300)
        weights = resp.mean(axis=0)
        rates = np.clip(
            (resp * k[:, None]).sum(axis=0) / np.maximum((resp * m[:, None]).sum(axis=0), 1e-12), 1e-6, 1 - 1e-6
        )
    mixed = np.log(np.maximum((weights * stats.binom.pmf(k[:, None], m[:, None], rates)).sum(axis=1), 1e-300))
    single = stats.binom.logpmf(k, m, one)
    low = int(np.argmin(rates))
    return float(rates[low]), float(rates[1 - low]), float(weights[low]), float(2 * (mixed.sum() - single.sum()))


def two_sense_evidence(votes: pd.DataFrame, min_votes: int = 3, min_node_votes: int = 2) -> pd.DataFrame:
    """Per node, over items where it got at least two votes: clear and contested modes and a mixture fit.

    Requiring two votes keeps out items where the node is one annotator's stray pick, which every node
    collects and which would make every node look bimodal. ``contested_share`` is the share of those items
    where the node has at most 60% of the votes and ``clear_share`` the share where it has at least 80%;
    ``bimodality`` is Sarle's coefficient of the per-item vote share (above 5/9 suggests two modes);
    ``rate_low``, ``rate_high`` and ``weight_low`` are the two-rate binomial mixture fitted to the per-item
    counts and ``likelihood_ratio`` its gain over one rate (twice the log-likelihood difference).
    """
    m = votes.groupby("item")["n"].transform("sum")
    frame = votes.assign(m=m, share=votes["n"] / m)
    frame = frame[frame["m"] >= min_votes]
    rows = []
    for node, group in frame[frame["n"] >= min_node_votes].groupby("node", sort=True):
        share, total = group["share"].to_numpy(), group["m"].to_numpy()
        low, high, weight_low, ratio = binomial_mixture(group["n"].to_numpy(), total)
        n = share.size
        skew = float(stats.skew(share, bias=False)) if n > 3 else float("nan")
        kurt = float(stats.kurtosis(share, bias=False)) if n > 3 else float("nan")
        bimodality = (skew**2 + 1) / (kurt + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))) if n > 3 else float("nan")
        contested_items = group[group["share"] <= CONTESTED_AT]["item"]
        others = frame[frame["item"].isin(contested_items) & (frame["node"] != node)]
        co = others.groupby("node")["n"].sum().sort_values(ascending=False, kind="stable")
        rows.append(
            {
                "node_id": node,
                "items": n,
                "mean_share": float(share.mean()),
                "clear_share": float((share >= CLEAR_AT).mean()),
                "contested_share": float((share <= CONTESTED_AT).mean()),
                "rate_low": low,
                "rate_high": high,
                "weight_low": weight_low,
                "likelihood_ratio": ratio,
                "bimodality": bimodality,
                "top_co_label": str(co.index[0]) if not co.empty else None,
                "co_label_share": float(co.iloc[0] / co.sum()) if not co.empty else float("nan"),
            }
        )
    return pd.DataFrame(rows)
