"""`labelgov report`: the headline figures for scripts and for leadership's digest.

The key names of ``headline`` are a contract for scripts: counts, alpha, alpha_by_level (keyed by depth
from 1 at the top), accuracy_vs_gold (always both aggregation methods, majority_vote and dawid_skene),
model_accuracy_vs_gold (keyed by model name@version, one key per model with gold to grade it),
escalation_rate, escalation_gain, cost_per_item and top_drift_alerts. Values that cannot be computed
(no gold, no escalations, no items for a rate) are null, never missing, so a script can index them.
"""

from __future__ import annotations

import math
from typing import Any

import duckdb

from queries import agreement, drift, escalation, hierarchy_accuracy, info, soft_labels
from queries.filters import Filters
from queries.refresh import require_refreshed
from queries.results import first_row

# hierarchy_accuracy's method names -> the report's stable keys.
METHOD_KEYS = {"majority": "majority_vote", "dawid_skene": "dawid_skene"}
# hierarchy_accuracy names a model's rows "model:<name>@<version>".
MODEL_PREFIX = "model:"


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else round(number, 6)


def cost_per_item(con: duckdb.DuckDBPyConnection, f: Filters) -> float | None:
    """Total annotation cost over the items that received the filtered answers."""
    clause, params = f.where("a")
    row = first_row(
        con.execute(
            "SELECT sum(a.cost) / nullif(count(DISTINCT a.item_idx), 0) FROM d_answers a WHERE " + clause,  # noqa: S608 - predicate from Filters
            params,
        )
    )
    return _number(row[0]) if row else None


def headline(con: duckdb.DuckDBPyConnection, f: Filters, alerts: int = 5) -> dict[str, Any]:
    """Every headline figure under the filters, as plain JSON-ready values; refuses a warehouse that was
    never refreshed, whose derived tables the figures are read from."""
    version = require_refreshed(con)
    depth = soft_labels.max_depth(con)
    accuracy = hierarchy_accuracy.hierarchical_accuracy(con, f)
    exact = {str(row["method"]): _number(row["exact"]) for row in accuracy.to_dict("records")}
    summary = escalation.escalation_summary(con, f)
    top_alerts = drift.drift_alerts(con, f, limit=alerts)
    return {
        "data_version": version,
        "filters": f.to_query_params(),
        "counts": info.table_counts(con),
        "alpha": _number(agreement.alpha(con, f, bootstrap=0).value),
        "alpha_tree": _number(agreement.alpha(con, f, metric="tree", bootstrap=0).value),
        "alpha_by_level": {
            str(level): _number(agreement.alpha(con, f, level=level, bootstrap=0).value)
            for level in range(1, depth + 1)
        },
        "accuracy_vs_gold": {key: exact.get(method) for method, key in METHOD_KEYS.items()},
        "model_accuracy_vs_gold": {
            method.removeprefix(MODEL_PREFIX): value
            for method, value in exact.items()
            if method.startswith(MODEL_PREFIX)
        },
        "gold_items": int(accuracy["n"].max()) if not accuracy.empty else 0,
        # escalation_summary gives 0.0 when there are no items; a rate over nothing is unknown, not zero.
        "escalation_rate": _number(summary.escalation_rate) if summary.items else None,
        "escalation_gain": _number(summary.gain),
        "escalation_accuracy_before": _number(summary.accuracy_before),
        "escalation_accuracy_after": _number(summary.accuracy_after),
        "cost_per_item": cost_per_item(con, f),
        "top_drift_alerts": [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
            for row in top_alerts.to_dict("records")
        ],
    }
