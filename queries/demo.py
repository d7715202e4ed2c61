"""`labelgov demo`: a simulated moderation labelling operation with planted, recorded truth.

The demo is the project's test bed as much as its showcase: every effect the analytics should find
(spammers, a degrading annotator, hard sibling pairs, drift, a guideline change, an overconfident
model) is planted on purpose and written to ``demo_manifest``, together with the realised figures
measured on the generated rows, so that tests and readers can check the analytics against the truth.
The same seed always produces the same rows.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from queries import demo_config as cfg
from queries import demo_write as write
from queries.connection import bump_data_version, connect, memory, resolve_db_path, transaction
from queries.demo_labels import Labels, label_items
from queries.demo_model import Predictions, predict
from queries.demo_world import (
    WEEK_S,
    Annotators,
    Items,
    TreeIndex,
    demo_tree_text,
    load_demo_tree,
    make_annotators,
    make_items,
)
from queries.errors import LabelgovError
from queries.results import first_row
from queries.taxonomy import store_tree

TRUTH_TABLE = "demo_truth"
NON_EMPTY_CHECK = ("tree_versions", "items", "annotations")


@dataclass(frozen=True)
class Simulation:
    config: cfg.DemoConfig
    index: TreeIndex
    items: Items
    people: Annotators
    labels: Labels
    model: Predictions


@dataclass(frozen=True)
class DemoResult:
    path: str
    counts: dict[str, int]
    seconds: float
    manifest: dict[str, Any]


def simulate(config: cfg.DemoConfig) -> Simulation:
    """All rows as arrays; one generator seeded once, so the draw order alone fixes the output."""
    rng = np.random.default_rng(config.seed)
    index = load_demo_tree()
    items = make_items(rng, index, config.items, config.events)
    people = make_annotators(rng, index, config.items, config.events)
    labels = label_items(rng, index, people, items, config.events)
    model = predict(rng, index, items.truth, items.week)
    return Simulation(config, index, items, people, labels, model)


def _week_date(week: int) -> str:
    return (cfg.START + timedelta(weeks=week)).isoformat()


def _accuracy(right: np.ndarray, mask: np.ndarray) -> float | None:
    total = int(mask.sum())
    return round(float(right[mask].sum()) / total, 4) if total else None


def _annotator_facts(sim: Simulation) -> dict[str, dict[str, Any]]:
    """Planted and realised accuracy: realised = share of leaf answers equal to the true leaf."""
    answers, people, index = sim.labels.annotations, sim.people, sim.index
    is_leaf = np.zeros(len(index.node_ids), dtype=bool)
    is_leaf[index.leaves] = True
    leaf_answer = is_leaf[answers.node]
    right = answers.node == index.leaves[sim.items.truth[answers.item]]
    n = len(people.ids)
    total = np.bincount(answers.annotator, minlength=n)
    leafs = np.bincount(answers.annotator, weights=leaf_answer, minlength=n)
    hits = np.bincount(answers.annotator, weights=right & leaf_answer, minlength=n)
    return {
        people.ids[a]: {
            "kind": people.kind[a],
            "tier": people.tier[a],
            "planted_accuracy": round(float(people.accuracy[a]), 4),
            "realised_accuracy": round(float(hits[a] / leafs[a]), 4) if leafs[a] else None,
            "answers": int(total[a]),
            "is_spammer": bool(people.spammer[a]),
            "degrades": a == people.degrading,
        }
        for a in range(n)
    }


def _degrading(sim: Simulation) -> dict[str, Any] | None:
    who = sim.people.degrading
    if who is None:
        return None
    answers, index = sim.labels.annotations, sim.index
    mine = answers.annotator == who
    right = answers.node == index.leaves[sim.items.truth[answers.item]]
    leaf = np.isin(answers.node, index.leaves)
    late = answers.t >= cfg.DEGRADE_FROM_WEEK * WEEK_S
    return {
        "id": sim.people.ids[who],
        "from_week": cfg.DEGRADE_FROM_WEEK,
        "accuracy_before": _accuracy(right, mine & leaf & ~late),
        "accuracy_after": _accuracy(right, mine & leaf & late),
    }


def manifest(sim: Simulation) -> dict[str, Any]:
    """The planted truth and the realised figures, keyed as the tests and analytics expect."""
    config, index, labels, items = sim.config, sim.index, sim.labels, sim.items
    expert = labels.expert_answers
    expert_right = expert.node == index.leaves[items.truth[expert.item]]
    n_scored = len(sim.model.item)
    return {
        "seed": config.seed,
        "scale": config.scale,
        "items": config.items,
        "events": config.events,
        "start_date": cfg.START.isoformat(),
        "weeks": cfg.WEEKS,
        "tree": index.tree.taxonomy,
        "hard_sibling_pairs": [list(pair) for pair in cfg.HARD_SIBLING_PAIRS],
        "drift": {
            "branch": cfg.DRIFT_BRANCH, "week": cfg.DRIFT_WEEK, "date": _week_date(cfg.DRIFT_WEEK),
            "source": cfg.DRIFT_SOURCE,
        } if config.events else None,
        "guideline_change": {
            "branch": cfg.GUIDELINE_BRANCH, "week": cfg.GUIDELINE_WEEK, "date": _week_date(cfg.GUIDELINE_WEEK),
            "from": "g1", "to": "g2",
        } if config.events else None,
        "annotators": _annotator_facts(sim),
        "spammers": [sim.people.ids[a] for a in np.flatnonzero(sim.people.spammer)],
        "degrading": _degrading(sim),
        "escalation_rule": {
            "k": cfg.K_INITIAL,
            "k_extended": cfg.K_EXTENDED,
            "extend_share": cfg.EXTEND_SHARE,
            "extend_when": "the first k answers are not unanimous (for extend_share of such items)",
            "confidence_threshold": cfg.CONFIDENCE_THRESHOLD,
            "gap_threshold": cfg.GAP_THRESHOLD,
            "triggers": "confidence_threshold when the majority share < confidence_threshold; else "
                        "consensus_gap when (top - runner-up votes) / answers < gap_threshold; else conflict "
                        f"when answers span branches and one is high-severity {list(cfg.HIGH_SEVERITY)}; "
                        f"else manual for a random {cfg.MANUAL_SHARE:.1%}",
            "expert_routing": "an expert whose expertise covers the top-level branch of the crowd majority, "
                              "preferring one who reads the item's language",
        },
        "expert_accuracy": _accuracy(expert_right, np.ones(len(expert_right), dtype=bool)),
        "escalations": {"total": len(labels.escalated), "unresolved": int(np.isnan(labels.resolved_at).sum())},
        "miscalibrated": dict(cfg.MISCALIBRATED),
        "model": {
            "name": cfg.MODEL, "versions": {"v1": 0, "v2": cfg.MODEL_V2_WEEK},
            "prediction_share": round(sim.model.share_scored, 4), "predictions": n_scored,
            "min_probability": cfg.MIN_PROBABILITY,
        },
        "gold_share": round(len(labels.gold) / config.items, 4),
        "duplicate_content_items": items.duplicate_items,
        "weekly_items": items.weekly_volume.tolist(),
        "cost_model": "cost = annotators.cost_rate, a piece rate per annotation by tier "
                      f"{cfg.COST_RATE}; duration does not change pay",
        "sources": [items.source_names[s] for s in np.unique(items.source)],
        "true_labels_table": TRUTH_TABLE,
    }


def row_counts(sim: Simulation) -> dict[str, int]:
    return {
        "items": len(sim.items.t),
        "annotators": len(sim.people.ids),
        "annotations": len(sim.labels.annotations.item),
        "gold_labels": len(sim.labels.gold),
        "predictions": len(sim.model.item),
        "escalations": len(sim.labels.escalated),
    }


def write_simulation(con: duckdb.DuckDBPyConnection, sim: Simulation, created_by: str) -> dict[str, Any]:
    """Everything in the caller's transaction: the tree, one batch per table, the rows, the manifest."""
    con.execute("SET enable_progress_bar = false")  # the bulk inserts would draw bars on the terminal
    tree_version = store_tree(con, sim.index.tree, created_by=created_by, source_text=demo_tree_text())
    batches = write.open_batches(con, sim.config, tree_version, row_counts(sim), created_by)
    write.write_items(con, sim.items, batches["items"])
    write.write_annotators(con, sim.people, batches["annotators"])
    write.write_annotations(con, sim.index, sim.people, sim.labels, tree_version, batches["annotations"])
    write.write_gold(con, sim.index, sim.items, sim.labels, tree_version, batches["gold_labels"])
    write.write_predictions(con, sim.index, sim.items, sim.model, tree_version, batches["predictions"])
    write.write_escalations(con, sim.people, sim.labels, batches["escalations"])
    write.write_truth(con, sim.index, sim.items)
    facts = manifest(sim)
    con.executemany(
        "INSERT OR REPLACE INTO demo_manifest VALUES (?, ?)",
        [[key, json.dumps(value, sort_keys=True)] for key, value in facts.items()],
    )
    bump_data_version(con)
    return facts


def _refuse_overwrite(path: Path, force: bool) -> None:
    """A warehouse that holds a tree or data is only replaced when asked to, and then as a whole file."""
    if not path.exists() or path.stat().st_size == 0:
        return
    if force:
        path.unlink()
        Path(f"{path}.wal").unlink(missing_ok=True)
        return
    with connect(path, read_only=True) as con:
        rows = [first_row(con.execute("SELECT count(*) FROM " + table)) for table in NON_EMPTY_CHECK]  # noqa: S608 - fixed allow-list
    if any(row and row[0] for row in rows):
        raise LabelgovError(
            f"{path} already holds a warehouse with data; pass --force to replace it with the demo, "
            "or choose another file with --db"
        )


def build_demo(db: str | Path | None, config: cfg.DemoConfig, *, force: bool, created_by: str) -> DemoResult:
    """Simulate, then write in one transaction; refuse to overwrite data unless forced."""
    path = resolve_db_path(db)
    _refuse_overwrite(path, force)
    started = time.perf_counter()
    sim = simulate(config)
    with connect(path) as con, transaction(con):
        facts = write_simulation(con, sim, created_by)
    return DemoResult(str(path), row_counts(sim), time.perf_counter() - started, facts)


def memory_demo(scale: str = "small", seed: int = 7, events: bool = True) -> duckdb.DuckDBPyConnection:
    """An in-memory demo warehouse: what tests of the analytics check against the planted truth."""
    con = memory()
    with transaction(con):
        write_simulation(con, simulate(cfg.demo_config(scale, seed, events)), "demo")
    return con
