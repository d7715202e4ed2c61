"""Drift statistics against scipy/statsmodels, and drift planted in generated warehouses."""

from __future__ import annotations

import functools
import json

import duckdb
import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ttest_ind
from statsmodels.stats.multitest import multipletests

from queries import agreement, derived_base, drift, soft_labels
from queries.connection import memory
from queries.errors import LabelgovError
from queries.filters import Filters
from queries.refresh import RefreshContext
from queries.taxonomy import parse_tree, store_tree
from tests.conftest import cached_demo, load_answers
from tests.test_agreement import TREE

LEAVES = ["a1x", "a1y", "a2x", "a2y", "b1x", "b1y", "b2", "c"]
START = pd.Timestamp("2026-01-05")  # a Monday: weeks start here


def generated(
    seed: int,
    weeks: int = 12,
    items_per_week: int = 400,
    shift_week: int | None = None,
    degrade: str | None = None,
) -> pd.DataFrame:
    """Three answers per item from ten annotators. With ``shift_week``, from that week items under a2 become
    rare and b1y common, answers on items of b are right less often (wrong ones stay inside b), and from
    three weeks later everyone reports lower confidence. ``degrade`` names an annotator who answers at
    random from week 6."""
    rng = np.random.default_rng(seed)
    n = weeks * items_per_week
    week = np.repeat(np.arange(weeks), items_per_week)
    shifted = week >= (weeks if shift_week is None else shift_week)
    probs = np.where(shifted[:, None], [2, 2, 0.5, 0.5, 2, 6, 2, 2], [2.0] * 8)
    truth = (probs.cumsum(axis=1) / probs.sum(axis=1, keepdims=True) > rng.random(n)[:, None]).argmax(axis=1)
    who = np.array([rng.choice(10, 3, replace=False) for _ in range(n)]).ravel()
    item = np.repeat(np.arange(n), 3)
    in_b = np.isin(truth[item], [4, 5, 6])
    accuracy = np.where(in_b & shifted[item], 0.5, 0.9)
    if degrade is not None:
        accuracy[(who == int(degrade[1:])) & (week[item] >= 6)] = 0.2
    anywhere = rng.integers(0, len(LEAVES), n * 3)
    inside_b = rng.integers(4, 7, n * 3)
    wrong = np.where(in_b & shifted[item], inside_b, anywhere)
    answer = np.where(rng.random(n * 3) < accuracy, truth[item], wrong)
    seconds = (week[item] * 7 + rng.integers(0, 7, n * 3)) * 86400 + rng.integers(0, 86400, n * 3)
    later = week[item] >= (weeks if shift_week is None else shift_week + 1)
    return pd.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in item],
            "annotator_id": [f"u{a}" for a in who],
            "node_id": np.array(LEAVES)[answer],
            "created_at": START + pd.to_timedelta(seconds, unit="s"),
            "confidence": np.clip(rng.normal(0.8, 0.1, n * 3) - 0.1 * later, 0, 1),
        }
    )


def warehouse(answers: pd.DataFrame):
    con = memory()
    load_answers(con, TREE, answers)
    derived_base.build(con)
    return con


@functools.lru_cache(maxsize=2)
def planted(events: bool):
    return warehouse(generated(11, shift_week=8 if events else None, degrade="u3" if events else None))


def test_distribution_tests_match_scipy() -> None:
    rng = np.random.default_rng(0)
    current = rng.integers(0, 50, size=(6, 5)).astype(float)
    reference = rng.integers(0, 80, size=(6, 5)).astype(float)
    current[0, 2] = reference[0, 2] = 0  # a child seen nowhere drops out of the test
    reference[1, 4] = 0  # a child only in the current window still counts
    got = drift.distribution_tests(current, reference)
    for i in range(6):
        table = np.vstack([current[i], reference[i]])
        table = table[:, table.sum(axis=0) > 0]
        chi2, p, _, _ = chi2_contingency(table, correction=False)
        assert got["chi2"][i] == pytest.approx(chi2, rel=1e-9)
        assert got["p_value"][i] == pytest.approx(p, rel=1e-9)
        assert got["js"][i] == pytest.approx(jensenshannon(current[i], reference[i], base=2), abs=1e-12)
        p_share, q_share = current[i] / current[i].sum(), reference[i] / reference[i].sum()
        pf, qf = np.maximum(p_share, drift.PSI_FLOOR), np.maximum(q_share, drift.PSI_FLOOR)
        assert got["psi"][i] == pytest.approx(np.sum((pf - qf) * np.log(pf / qf)), rel=1e-12)


def test_benjamini_hochberg_matches_statsmodels() -> None:
    p = np.random.default_rng(1).random(40) ** 3
    p[[3, 7]] = np.nan
    got = drift.bh_adjust(p)
    ok = np.isfinite(p)
    assert np.allclose(got[ok], multipletests(p[ok], method="fdr_bh")[1])
    assert np.isnan(got[~ok]).all()


def test_branch_distribution_counts_answers_by_child_on_their_path() -> None:
    answers = pd.DataFrame(
        {
            "item_id": ["i1", "i1", "i2", "i3", "i4"],
            "annotator_id": ["u1", "u2", "u1", "u1", "u2"],
            "node_id": ["a1x", "a1y", "a2", "a", "b2"],
        }
    )
    con = warehouse(answers)
    counts = drift.label_counts(agreement.scan(con, Filters()), agreement.value_space(con))
    got = {(r.branch, r.child): r.n for r in counts.itertuples()}
    # a: a1 twice (a1x, a1y), a2 once; the coarse answer "a" has no child and drops out; a1: a1x, a1y.
    # The root counts every answer by its top-level area.
    assert got == {
        ("a", "a1"): 2, ("a", "a2"): 1, ("a1", "a1x"): 1, ("a1", "a1y"): 1, ("b", "b2"): 1,
        (drift.ROOT, "a"): 4, (drift.ROOT, "b"): 1,
    }  # fmt: skip
    # Per-item sums for the design effects: in branch a item i1 has m = 2 answers, both on a1 (y = 2), and i2
    # one on a2; the root has four items with one answer each, i1's two.
    sums = {(r.branch, r.child): (r.items, r.sum_y2, r.sum_ym, r.sum_m2) for r in counts.itertuples()}
    assert sums[("a", "a1")] == (2, 4, 4, 5) and sums[("a", "a2")] == (2, 1, 1, 5)
    assert sums[(drift.ROOT, "a")] == (4, 4 + 1 + 1, 4 + 1 + 1, 4 + 1 + 1 + 1)


def test_label_counts_do_not_depend_on_the_order_of_answers_within_a_unit() -> None:
    """The compiled pass reads each (item, week) run as a multiset: answers shuffled within their units, as
    a scan that is not sorted by value leaves them, give the same sums, and so do the answers as runs."""
    con = planted(True)
    answers, space = agreement.scan(con, Filters()), agreement.value_space(con)
    shuffle = np.lexsort((np.random.default_rng(3).random(answers.item.size), answers.day, answers.item))
    assert not np.array_equal(answers.value[shuffle], answers.value)
    shuffled = agreement.Answers(answers.item[shuffle], answers.value[shuffle], answers.day[shuffle])
    pd.testing.assert_frame_equal(drift.label_counts(shuffled, space), drift.label_counts(answers, space))
    runs = answers.runs()  # nor on whether equal answers of a unit come one a row or as one weighted row
    assert runs.item.size < answers.item.size
    pd.testing.assert_frame_equal(drift.label_counts(runs, space), drift.label_counts(answers, space))


def test_sums_by_week_equal_a_group_by_and_leave_out_unstated_values() -> None:
    """_sums_by_week against a pandas group-by, on confidences of which a fifth are not stated (NaN): those rows
    count nowhere, not even in n, and a week whose every row is NaN has no row. Rows without a key (-1, as
    pandas codes a missing value) count nowhere either."""
    rng = np.random.default_rng(5)
    key = rng.integers(-1, 7, 4000)
    day = 20454 + 7 * rng.integers(0, 9, 4000)  # week starts
    x = np.where(rng.random(4000) < 0.2, np.nan, rng.random(4000))
    x[day == 20454 + 7 * 8] = np.nan
    cells = drift._sums_by_week(key, day, x)
    got = pd.DataFrame(
        {"key": np.array(list("abcdefg"))[cells.key], "week": pd.to_datetime(cells.day, unit="D"), "n": cells.n}
        | cells.sums
    )
    frame = pd.DataFrame({"key": np.array(list("abcdefg"))[key], "week": pd.to_datetime(day, unit="D"), "x": x})
    frame = frame[key >= 0]
    want = frame.dropna().groupby(["key", "week"])["x"].agg(["size", "sum", lambda v: (v * v).sum()])
    want.columns = ["n", "sum", "sum_sq"]
    assert pd.Timestamp(20454 + 7 * 8, unit="D") not in set(got["week"])
    got = got.set_index(["key", "week"]).sort_index()
    assert list(got.index) == list(want.index)
    assert np.array_equal(got["n"].to_numpy(), want["n"].to_numpy())
    assert np.allclose(got[["sum", "sum_sq"]].to_numpy(), want[["sum", "sum_sq"]].to_numpy(), rtol=1e-12)


def test_design_effect_gives_the_item_clustered_variance_of_a_share() -> None:
    """A node's share of its parent's answers is a ratio over items; its variance with the items as clusters is
    the robust (HC0) variance of a weighted mean of each item's share, weighted by its answers."""
    con = planted(True)
    counts = drift.label_counts(agreement.scan(con, Filters()), agreement.value_space(con))
    cell = counts[(counts["branch"] == "b") & (counts["week"] == START + pd.Timedelta(weeks=9))]
    table = cell.pivot_table(index="branch", columns="child", values=["n", "sum_y2", "sum_ym"])
    design = drift.design_effects(
        table["n"].to_numpy(), table["sum_y2"].to_numpy(), table["sum_ym"].to_numpy(), cell["sum_m2"].to_numpy()[:1]
    )[0]
    answers = con.execute(
        "SELECT a.item_id, n.lineage[2] AS child FROM d_answers a JOIN d_nodes n USING (tree_version, node_id) "
        "WHERE n.lineage[1] = 'b' AND len(n.lineage) >= 2 AND a.week = ?",
        [START + pd.Timedelta(weeks=9)],
    ).df()
    per_item = pd.crosstab(answers["item_id"], answers["child"])
    m = per_item.sum(axis=1).to_numpy(dtype=float)
    assert len(per_item) == cell["items"].iloc[0]
    for j, child in enumerate(table["n"].columns):
        share = per_item[child].to_numpy() / m
        fit = sm.WLS(share, np.ones_like(share), weights=m).fit(cov_type="HC0")
        p = share @ m / m.sum()
        assert fit.params[0] == pytest.approx(p)
        assert design[j] * p * (1 - p) / m.sum() == pytest.approx(max(fit.bse[0] ** 2, p * (1 - p) / m.sum()))
    assert (design > 1.2).all()  # three answers per item that mostly agree: not independent draws


def test_clustered_null_keeps_its_false_positive_rate() -> None:
    """Items answered nine times over, no change between window and reference: Rao and Scott's correction keeps
    the chi-square's rejections near the nominal rate, and the share z-test's, where the uncorrected tests
    reject most of the time."""
    rng = np.random.default_rng(3)
    runs, items, answers, prior = 2000, 150, 9, np.array([0.6, 0.25, 0.1, 0.05])
    truth = rng.choice(prior.size, size=(2, runs, items), p=prior)
    right = rng.random((2, runs, items, answers)) < 0.8
    value = np.where(right, truth[..., None], rng.integers(0, prior.size, (2, runs, items, answers)))
    y = (value[..., None] == np.arange(prior.size)).sum(axis=3).astype(float)  # (side, run, item, child)
    n = y.sum(axis=2)
    sum_y2 = (y**2).sum(axis=2).sum(axis=0)  # over the items of both sides
    sum_ym = (y * answers).sum(axis=2).sum(axis=0)
    design = drift.design_effects(n[0] + n[1], sum_y2, sum_ym, np.full(runs, 2 * items * answers**2.0))
    corrected = drift.distribution_tests(n[0], n[1], design)["p_value"]
    naive = drift.distribution_tests(n[0], n[1])["p_value"]
    assert 0.03 < (corrected < 0.05).mean() < 0.07 and (naive < 0.05).mean() > 0.5


def test_planted_label_drift_is_found_where_and_when_it_starts() -> None:
    con = planted(True)
    matrix = drift.drift_matrix(con, Filters())
    assert list(matrix.columns) == drift.MATRIX_COLUMNS
    assert matrix["week"].min() == (START + pd.Timedelta(weeks=4)).date().isoformat()
    top = matrix.iloc[0]
    assert top["branch"] == "a" and top["week"] >= "2026-03-02" and top["p_adjusted"] < 1e-5
    before = matrix[matrix["week"] < "2026-03-02"]
    assert before["js"].max() < 0.1 and (before["p_adjusted"] > drift.ALERT_P).all()
    by_psi = drift.drift_matrix(con, Filters(), metric="psi")
    assert by_psi["psi"].is_monotonic_decreasing
    monthly = drift.drift_matrix(con, Filters(), window="month", reference_weeks=4)
    assert set(monthly["week"]) <= {"2026-02-01", "2026-03-01"}


def test_alerts_rank_the_planted_events_and_the_control_raises_none() -> None:
    alerts = drift.drift_alerts(planted(True), Filters())
    assert list(alerts.columns) == drift.ALERT_COLUMNS
    found = {(r.branch, drift.FAMILY.get(r.metric, r.metric)): r.week for r in alerts.itertuples()}
    assert found[("a", "label")] == "2026-03-02"
    assert found[("b", "agreement")] == "2026-03-02"
    assert found[("u3", "annotator_agreement")] == "2026-02-16"
    assert {found.get((b, "confidence")) for b in "abc"} == {"2026-03-09"}
    assert alerts.iloc[0]["branch"] == "a" and alerts.iloc[0]["metric"].startswith("label")
    assert (alerts["branch"] + alerts["metric"].map(lambda m: drift.FAMILY.get(m, m))).is_unique
    assert drift.drift_alerts(planted(False), Filters()).empty
    assert len(drift.drift_alerts(planted(True), Filters(), limit=2)) == 2


def test_nested_alerts_fold_into_the_highest_alerting_branch() -> None:
    alerts = pd.DataFrame(
        {
            "branch": ["a", "a1", "b1", "a1", "a", "b1"],
            "week": ["2026-03-09", "2026-03-02", "2026-03-02", "2026-04-06", "2026-02-23", "2026-03-09"],
            "metric": ["label_js", "label_js", "label_js", "agreement", "label_share", "label_share"],
            "size": [0.2, 0.3, 0.25, 0.4, 2.0, 0.9],
        }
    )
    lineage = {"a": ["a"], "a1": ["a", "a1"], "b1": ["b", "b1"]}
    got = drift._fold_into_ancestors(alerts, lineage)
    # a1's JS folds into a (same metric: the larger size wins), a's share view into a's first row (onset
    # only), b1's share into b1's JS; agreement is another finding.
    assert got.to_dict("records") == [
        {"branch": "a", "week": "2026-02-23", "metric": "label_js", "size": 0.3},
        {"branch": "b1", "week": "2026-03-02", "metric": "label_js", "size": 0.25},
        {"branch": "a1", "week": "2026-04-06", "metric": "agreement", "size": 0.4},
    ]


def test_agreement_drift_is_a_drop_in_the_branch_after_the_change() -> None:
    table = drift.agreement_drift(planted(True), Filters(), bootstrap=40)
    b = table[table["branch"] == "b"].set_index("week")
    assert (b.loc[b.index >= "2026-03-02", "change"] < -0.4).all()
    assert (b.loc[b.index < "2026-03-02", "change"].abs() < 0.1).all()
    c = table[table["branch"] == "c"]  # a leaf: no subtree, no agreement of its own
    assert c.empty
    # The weekly alpha is alpha over the items of b's subtree answered that week.
    week = b.index[-1]
    day = pd.Timestamp(week).date()
    own = agreement.alpha(planted(True), Filters(branch="b", start=day, end=day + pd.Timedelta(days=6)), bootstrap=0)
    assert b.loc[week, "alpha"] == pytest.approx(own.value, abs=1e-9)


def test_confidence_drift_matches_welch() -> None:
    con = planted(True)
    table = drift.confidence_drift(con, Filters())
    frame = con.execute(
        "SELECT n.lineage[1] AS branch, a.week, a.confidence "
        "FROM d_answers a JOIN d_nodes n USING (tree_version, node_id)"
    ).df()
    row = table[(table["branch"] == "c")].iloc[-1]
    now = frame[(frame["branch"] == "c") & (frame["week"] == pd.Timestamp(row["week"]))]["confidence"]
    ref = frame[(frame["branch"] == "c") & (frame["week"] < START + pd.Timedelta(weeks=4))]["confidence"]
    t = ttest_ind(now, ref, equal_var=False)
    assert row["p_value"] == pytest.approx(t.pvalue, rel=1e-6)
    assert row["effect_size"] == pytest.approx((now.mean() - ref.mean()) / ref.std(), rel=1e-9)
    assert row["change"] < -0.05


def test_model_disagreement_drift_counts_argmax_against_consensus() -> None:
    con = warehouse(generated(5, weeks=8, items_per_week=120))
    items = con.execute(
        "SELECT i.item_id, i.consensus_node, i.consensus_lineage[1] AS branch, a.first_at AS created_at "
        "FROM d_items i JOIN (SELECT item_id, min(created_at) AS first_at FROM d_answers GROUP BY 1) a USING (item_id)"
    ).df()
    late = items["created_at"] >= START + pd.Timedelta(weeks=5)
    wrong = np.where(items["consensus_node"] == "c", "b2", "c")
    predicted = np.where(late & (np.arange(len(items)) % 2 == 0), wrong, items["consensus_node"])
    frame = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "probabilities": [{leaf: (0.9 if leaf == p else 0.1 / 7) for leaf in LEAVES} for p in predicted],
            "created_at": items["created_at"],
        }
    )
    con.register("_p", frame)
    con.execute("INSERT INTO predictions SELECT item_id, 'm', 'v1', 1, NULL, probabilities, created_at, 1 FROM _p")
    table = drift.model_disagreement_drift(con, Filters())
    week = (START + pd.to_timedelta((items["created_at"] - START).dt.days // 7 * 7, unit="D")).dt.date.astype(str)
    by_hand = (
        pd.DataFrame({"branch": items["branch"], "week": week, "wrong": predicted != items["consensus_node"]})
        .groupby(["branch", "week"])["wrong"]
        .agg(["mean", "size"])
    )
    got = table.set_index(["branch", "week"])
    expected = by_hand.loc[got.index]
    assert np.allclose(got["rate"], expected["mean"]) and (got["n"] == expected["size"]).all()
    assert (got.loc[got.index.get_level_values("week") >= "2026-02-09", "change"] > 0.2).all()


def test_annotator_drift_finds_the_degrading_annotator() -> None:
    table = drift.annotator_drift(planted(True), Filters())
    worst = table.sort_values("change").iloc[0]
    assert worst["annotator_id"] == "u3" and worst["week"] >= "2026-02-16" and worst["change"] < -0.5


def test_tree_version_changes_mark_the_first_week_of_use() -> None:
    answers = generated(2, weeks=6, items_per_week=20)
    con = memory()
    load_answers(con, TREE, answers)
    version = store_tree(con, parse_tree(TREE.replace("  c: {}", "  c: {}\n  d: {}")), created_by="test")
    con.execute(
        "UPDATE annotations SET tree_version = ? WHERE created_at >= ?", [version, START + pd.Timedelta(weeks=3)]
    )
    derived_base.build(con)
    changes = drift.tree_version_changes(con)
    assert list(changes["tree_version"]) == [version]
    assert list(changes["week"]) == ["2026-01-26"]


def test_reference_window_holds_when_the_week_after_it_is_empty() -> None:
    """The report names the reference weeks itself: reading them back from the first compared week would
    move them a week later whenever the week right after the reference has no answers."""
    answers = generated(12)
    week = (answers["created_at"] - START).dt.days // 7
    con = warehouse(answers[week != drift.REFERENCE_WEEKS])
    report = drift.drift_report(con, Filters())
    first_compared = pd.to_datetime(report.matrix["week"]).min()
    assert first_compared == START + pd.Timedelta(weeks=drift.REFERENCE_WEEKS + 1)
    end = START + pd.Timedelta(weeks=drift.REFERENCE_WEEKS) - pd.Timedelta(days=1)
    assert report.reference == (START.date(), end.date())
    late = drift.drift_report(con, Filters(start=(START + pd.Timedelta(weeks=1)).date()))
    assert late.reference == ((START + pd.Timedelta(weeks=1)).date(), (end + pd.Timedelta(weeks=1)).date())
    early = drift.drift_report(con, Filters(end=(START + pd.Timedelta(weeks=2)).date()))
    assert early.reference == report.reference and early.matrix.empty and early.agreement.empty


def test_empty_inputs_and_bad_arguments() -> None:
    con = planted(False)
    nothing = Filters(sources=("nowhere",))
    assert list(drift.drift_matrix(con, nothing).columns) == drift.MATRIX_COLUMNS
    for fn in (
        drift.drift_matrix,
        drift.drift_alerts,
        drift.agreement_drift,
        drift.confidence_drift,
        drift.model_disagreement_drift,
        drift.annotator_drift,
    ):
        assert fn(con, nothing).empty
    with pytest.raises(LabelgovError, match="metric"):
        drift.drift_matrix(con, Filters(), metric="kl")
    with pytest.raises(LabelgovError, match="window"):
        drift.drift_matrix(con, Filters(), window="year")
    with pytest.raises(LabelgovError, match="reference"):
        drift.drift_matrix(con, Filters(), reference_weeks=0)


def test_refresh_step_stores_what_the_pages_read() -> None:
    con = warehouse(generated(11, weeks=8, items_per_week=80, shift_week=6))
    everything = Filters(start=START.date() - pd.Timedelta(days=365))  # the same answers, computed live
    pages = {
        "matrix": drift.drift_matrix,
        "shares": drift.label_share_drift,
        "agreement": lambda c, f: drift.agreement_drift(c, f),
        "confidence": drift.confidence_drift,
        "model": drift.model_disagreement_drift,
        "annotators": drift.annotator_drift,
        "alerts": drift.drift_alerts,
    }
    live = {name: page(con, everything) for name, page in pages.items()}
    assert drift.refresh_step(con, RefreshContext(full=True, since_batch=0, touched_items=0)) == "full"
    stored = drift.drift_report(con, Filters())
    for name, page in pages.items():
        assert soft_labels.table_exists(con, drift.STORED[name])
        pd.testing.assert_frame_equal(page(con, Filters()), live[name], check_dtype=False)
        if name not in ("matrix", "alerts"):
            pd.testing.assert_frame_equal(getattr(stored, name), live[name], check_dtype=False)
    pd.testing.assert_frame_equal(stored.matrix_by("js"), live["matrix"], check_dtype=False)
    pd.testing.assert_frame_equal(stored.top_alerts(), live["alerts"], check_dtype=False)
    assert not live["alerts"].empty
    assert stored.reference == drift.drift_report(con, everything).reference
    assert stored.reference is not None and stored.reference[0] == START.date()
    # A warehouse refreshed before refresh kept the window: it is looked up instead.
    con.execute("DELETE FROM meta WHERE key = ?", [drift.REFERENCE_END_KEY])
    assert drift.drift_report(con, Filters()).reference == stored.reference


DEMO_ITEMS = 20_000  # at 5,000 items the drift is within the weekly noise


@pytest.fixture(scope="module")
def demo_pair(tmp_path_factory: pytest.TempPathFactory):
    """The refreshed demo with its planted events and the control built without them, read-only."""
    cons = [
        duckdb.connect(str(cached_demo(tmp_path_factory, DEMO_ITEMS, events=e)), read_only=True) for e in (True, False)
    ]
    yield cons
    for con in cons:
        con.close()


def planted_facts(con) -> dict[str, object]:
    return {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM demo_manifest").fetchall()}


def test_demo_planted_drift_is_the_top_alert_and_the_control_raises_none(demo_pair) -> None:
    con, control = demo_pair
    facts = planted_facts(con)["drift"]
    alerts = drift.drift_alerts(con, Filters())
    assert (alerts.iloc[0]["branch"], alerts.iloc[0]["week"]) == (facts["branch"], facts["date"])
    assert alerts.iloc[0]["metric"] in {"label_share", "label_js"}
    live = drift.drift_alerts(con, Filters(start=pd.Timestamp("2026-01-01").date()))  # computed, not stored
    assert (live.iloc[0]["branch"], live.iloc[0]["week"]) == (facts["branch"], facts["date"])
    assert drift.drift_alerts(control, Filters()).empty


def test_onset_is_the_start_of_the_step_that_the_alerting_windows_belong_to() -> None:
    quiet, step = [0.4, -0.6, 1.1, -0.2], [3.0, 4.6, 5.2, 4.1, 5.5]
    alerting = np.array([False] * 5 + [True] * 4)
    # The first week of the change (z = 3) does not alert itself but dates the alert; quiet weeks do not.
    assert drift._onset(np.array(quiet + step), alerting) == 4
    # A single quiet week at z = 1.1 just before a weak first week stays out.
    assert drift._onset(np.array([0.0, 1.1, 2.9, 5.0, 5.0]), np.array([False, False, False, True, True])) == 2
    # An alert without earlier evidence starts at its first alerting window.
    assert drift._onset(np.array([0.2, -1.0, 6.0, 1.0]), np.array([False, False, True, False])) == 2


def test_an_alert_whose_p_value_underflows_to_zero_is_kept_and_dated() -> None:
    """At ten million answers a strong window's p-value is exactly 0; its evidence must stay finite."""
    frame = pd.DataFrame(
        {
            "node": ["x"] * 4,
            "week": ["2026-02-02", "2026-02-09", "2026-02-16", "2026-02-23"],
            "p_value": [0.5, 0.4, 0.0, 0.0],
            "p_adjusted": [0.6, 0.5, 0.0, 0.0],
        }
    )
    alerts = drift._onsets(frame, "node", "label_share", pd.Series([0.01, 0.02, 0.9, 0.7]), pd.Series([1.0] * 4))
    assert alerts[["branch", "week", "size", "p_value", "windows"]].values.tolist() == [
        ["x", "2026-02-16", 0.9, 0.0, 2]
    ]


SEEDS = (2, 3, 7)  # 2: a small node's share moved by noise; 3: a first drift week below the size threshold


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_drift_is_dated_and_ranked_first_across_seeds(tmp_path_factory, seed: int) -> None:
    """The known answer for several generated worlds, not one: with events the planted branch and week is the
    top alert, and its size and p-values are those of one window of its analysis; the control is quiet."""
    with duckdb.connect(str(cached_demo(tmp_path_factory, DEMO_ITEMS, events=True, seed=seed)), read_only=True) as con:
        facts = planted_facts(con)["drift"]
        top = drift.drift_alerts(con, Filters()).iloc[0]
        assert (top["branch"], top["week"], top["metric"]) == (facts["branch"], facts["date"], "label_share")
        shares = drift.label_share_drift(con, Filters())
        # The peak window is the branch's own or, folded into it, a node's below it (see _fold_into_ancestors).
        lineage = {row[0]: list(row[1]) for row in con.execute(agreement.LINEAGES).fetchall()}
        peak = shares[shares["p_value"] == top["p_value"]].iloc[0]
        assert top["branch"] in lineage[peak["node"]] and peak["p_adjusted"] == top["p_adjusted"]
        assert peak["week"] >= top["week"]
        assert abs(np.log(peak["share"] / peak["reference_share"])) == pytest.approx(top["size"])
    with duckdb.connect(str(cached_demo(tmp_path_factory, DEMO_ITEMS, events=False, seed=seed)), read_only=True) as con:
        assert drift.drift_alerts(con, Filters()).empty


def test_demo_guideline_change_lowers_agreement_in_its_branch_after_its_week(demo_pair) -> None:
    drops = []
    facts = planted_facts(demo_pair[0])["guideline_change"]
    for con in demo_pair:
        table = drift.agreement_drift(con, Filters())
        branch = table[table["branch"] == facts["branch"]]
        after = branch["week"] >= facts["date"]
        drops.append(branch.loc[after, "change"].mean() - branch.loc[~after, "change"].mean())
    assert drops[0] < -0.08 and drops[1] > -0.05


def test_short_date_ranges_skip_the_scan_with_the_same_empty_answer(small_demo) -> None:
    """A range shorter than the reference leaves no window to compare: the shortcut must equal the
    live computation; one just long enough still computes."""
    from datetime import timedelta

    from queries.connection import connect

    with connect(small_demo, read_only=True) as con:
        first = con.execute("SELECT min(week) FROM d_answers").fetchall()[0][0].date()
        for days in (6, 20, 27, 34):
            f = Filters(start=first, end=first + timedelta(days=days))
            short = drift._no_window_after_reference(f, drift.REFERENCE_WEEKS)
            assert short == (days < 28)
            live_alerts = drift._alerts(con, drift._frames(con, f, drift.REFERENCE_WEEKS)[1])
            pd.testing.assert_frame_equal(
                drift.drift_alerts(con, f), live_alerts[drift.ALERT_COLUMNS].head(20).reset_index(drop=True)
            )
            live_matrix = drift._matrix(con, f, "week", drift.REFERENCE_WEEKS)
            pd.testing.assert_frame_equal(drift.drift_matrix(con, f), drift.by_metric(live_matrix, "js"))
            assert drift.drift_matrix(con, f).empty == short
            report = drift.drift_report(con, f)
            pd.testing.assert_frame_equal(report.top_alerts(), drift.drift_alerts(con, f))
            pd.testing.assert_frame_equal(report.matrix_by("js"), drift.drift_matrix(con, f))
            assert report.agreement.empty == report.confidence.empty == report.annotators.empty == short


# The live model and annotator queries as they were written before they matched items by index: the
# reference the faster queries must reproduce.
MODEL_BY_ITEM_ID = """
WITH p AS (
    SELECT item_id, date_trunc('week', created_at) AS week,
           map_keys(probabilities)[list_position(map_values(probabilities), list_max(map_values(probabilities)))]
               AS predicted
    FROM predictions
    WHERE created_at IS NOT NULL AND item_id IN (SELECT a.item_id FROM d_answers a WHERE {P})
)
SELECT i.consensus_lineage[1] AS branch, p.week, count(*) AS n,
       sum(CAST(p.predicted <> i.consensus_node AS INTEGER)) AS disagree
FROM p JOIN d_items i USING (item_id)
GROUP BY ALL
"""
ANNOTATOR_BY_ITEM_ID = """
SELECT a.annotator_id, a.week, count(*) AS n, sum(CAST(a.node_id = i.consensus_node AS INTEGER)) AS agree
FROM d_answers a JOIN d_items i USING (item_id)
WHERE {P} GROUP BY ALL
"""


def test_filtered_alerts_from_one_scan_equal_each_page_computed_on_its_own(small_demo) -> None:
    """Filtered alerts compute their six analyses from one reference window and one scan of the answers:
    under item-level, answer-level and combined filters each analysis, and so the alerts, must equal the
    page functions called one by one, and the model and annotator counts the queries joined on item ids."""
    from queries.connection import connect

    with connect(small_demo, read_only=True) as con:
        branch, source = con.execute(
            "SELECT consensus_lineage[1], source FROM d_items GROUP BY ALL ORDER BY count(*) DESC LIMIT 1"
        ).fetchall()[0]
        tier, first = con.execute(
            "SELECT tier, min(week) FROM d_answers WHERE tier IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchall()[0]
        start = first.date() + pd.Timedelta(days=14)
        cases = [
            Filters(branch=branch),
            Filters(sources=(source,)),
            Filters(tiers=(tier,)),
            Filters(start=start),
            Filters(branch=branch, tiers=(tier,), start=start),
            Filters(sources=(source,), stages=("initial",)),
        ]
        pages = {
            "matrix": drift.drift_matrix,
            "shares": drift.label_share_drift,
            "agreement": lambda c, f: drift.agreement_drift(c, f),
            "confidence": drift.confidence_drift,
            "model": drift.model_disagreement_drift,
            "annotators": drift.annotator_drift,
        }
        for f in cases:
            frames = drift._frames(con, f, drift.REFERENCE_WEEKS)[1]
            each = {name: page(con, f) for name, page in pages.items()}
            report = drift.drift_report(con, f)
            for name, frame in each.items():
                pd.testing.assert_frame_equal(frames[name], frame, check_dtype=False)
                if name != "matrix":
                    pd.testing.assert_frame_equal(getattr(report, name), frame, check_dtype=False)
            for metric in drift.METRICS:
                pd.testing.assert_frame_equal(report.matrix_by(metric), drift.drift_matrix(con, f, metric))
            expected = drift._alerts(con, each)[drift.ALERT_COLUMNS].head(20).reset_index(drop=True)
            pd.testing.assert_frame_equal(drift.drift_alerts(con, f), expected)
            pd.testing.assert_frame_equal(report.top_alerts(), expected)
            pd.testing.assert_frame_equal(report.top_alerts(3), expected.head(3))
            clause, params = f.where("a")
            end = drift._reference_end(con, f, drift.REFERENCE_WEEKS)
            for query, key, counted, frame in (
                (MODEL_BY_ITEM_ID, "branch", "disagree", frames["model"]),
                (ANNOTATOR_BY_ITEM_ID, "annotator_id", "agree", frames["annotators"]),
            ):
                old = con.execute(query.replace("{P}", clause), params).df()
                code, names = pd.factorize(old[key])
                days = old["week"].to_numpy().astype("datetime64[D]").astype(np.int64)
                cells = drift._Cells(code, days, old["n"].to_numpy(), {counted: old[counted].to_numpy()})
                reference = drift._compare_rates(cells, np.asarray(names, dtype=object), key, end, counted)[
                    [key, *drift.RATE_COLUMNS]
                ]
                pd.testing.assert_frame_equal(frame, reference, check_dtype=False)
        assert not drift.drift_alerts(con, cases[0]).empty
