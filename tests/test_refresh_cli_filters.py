"""What the command line says about refreshing, and the sidebar's annotator and tree-version filters.

`labelgov refresh`'s header must agree with the per-step modes it lists below it, and say when there was
nothing to do; `labelgov info` must say whether the analytics show the current data. The annotator
multiselect must narrow a page exactly as the same filter in the URL does.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

from governance.roles import Role
from queries import reliability
from queries.connection import connect
from queries.derived_base import as_of_version
from queries.filters import Filters
from queries.taxonomy import parse_tree, store_tree
from tests.test_app_pages import APP, demo_db, go, open_app, query  # noqa: F401 - demo_db is a fixture
from tests.test_ingest_cli import FIXTURES, run

FIRST = "item_id,annotator_id,label\nq1,w1,1\nq1,w2,1\nq2,w1,2\nq2,w2,3\nq3,w1,0\nq3,w3,0\n"
# Two items get new answers: q4 (new) and q1 (a third annotator).
MORE = "item_id,annotator_id,label\nq4,w1,1\nq4,w3,2\nq1,w3,1\n"
GOLD = "item_id,label\nq1,1\nq2,2\n"


@pytest.fixture
def warehouse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A tree and one batch of answers, never refreshed."""
    db = tmp_path / "w.duckdb"
    assert run(capsys, "tree", "import", str(FIXTURES / "tree.yaml"), "--db", str(db))[0] == 0
    ingest(capsys, db, "annotations", FIRST, "first.csv")
    return db


def ingest(capsys: pytest.CaptureFixture[str], db: Path, kind: str, rows: str, name: str) -> str:
    file = db.with_name(name)
    file.write_text(rows, encoding="utf-8")
    code, out, err = run(capsys, "ingest", kind, str(file), "--db", str(db))
    assert code == 0, err
    return out


def refresh_cli(capsys: pytest.CaptureFixture[str], db: Path, *extra: str) -> tuple[str, dict[str, str]]:
    """The header line and each listed step's mode; checks that the header names exactly the steps not run in full."""
    code, out, err = run(capsys, "refresh", "--db", str(db), *extra)
    assert code == 0, err
    header, *lines = out.splitlines()
    modes = {line.split()[0]: line.split()[1] for line in lines}
    partial = [step for step, mode in modes.items() if mode != "full"]
    if not modes:
        assert "already up to date" in header, header
    elif partial:
        assert f"incremental for {', '.join(partial)} (" in header, header
        assert f"full for the other {len(modes) - len(partial)} steps" in header, header
    else:
        assert ": full in " in header, header
    return header, modes


def refresh_count(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute("SELECT value FROM meta WHERE key = 'refresh_count'").fetchone()
    return int(row[0]) if row else 0


def test_refresh_header_matches_the_steps(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, modes = refresh_cli(capsys, warehouse)
    assert len(modes) > 1 and set(modes.values()) == {"full"}

    ingest(capsys, warehouse, "annotations", MORE, "more.csv")
    header, modes = refresh_cli(capsys, warehouse)
    touched = {line.split(",")[0] for line in MORE.splitlines()[1:]}
    assert [s for s, m in modes.items() if m != "full"] == ["escalation", "soft_labels"]
    assert f"soft_labels ({len(touched)} items with new answers)" in header

    ingest(capsys, warehouse, "gold", GOLD, "gold.csv")
    header, modes = refresh_cli(capsys, warehouse)
    assert "soft_labels (no new answers)" in header and modes["soft_labels"] == "incremental"

    done = refresh_count(warehouse)
    header, modes = refresh_cli(capsys, warehouse)
    assert modes == {} and "nothing new since the last refresh" in header
    assert refresh_count(warehouse) == done, "an up-to-date refresh recomputed the tables"

    header, modes = refresh_cli(capsys, warehouse, "--full")
    assert len(modes) > 1 and set(modes.values()) == {"full"}
    assert refresh_count(warehouse) == done + 1


def test_a_new_tree_version_is_never_up_to_date(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tables are computed in the as-of tree version: a new latest version (even one stored without a
    new data version) or another --as-of choice must recompute, a repeated choice need not."""
    refresh_cli(capsys, warehouse)
    with connect(warehouse) as con:
        second = (FIXTURES / "tree.yaml").read_text().replace('version: "1"', 'version: "2"')
        store_tree(con, parse_tree(second), created_by="t")
    header, modes = refresh_cli(capsys, warehouse)
    assert "as of tree v2" in header and modes and set(modes.values()) == {"full"}
    header, modes = refresh_cli(capsys, warehouse, "--as-of", "1")
    assert "as of tree v1" in header and modes and set(modes.values()) == {"full"}
    header, modes = refresh_cli(capsys, warehouse, "--as-of", "1")
    assert "as of tree v1" in header and modes == {}
    code, _, err = run(capsys, "refresh", "--db", str(warehouse), "--as-of", "9")
    assert code != 0 and "tree version 9 does not exist" in err
    with connect(warehouse, read_only=True) as con:
        assert as_of_version(con) == 1, "a refused --as-of changed the choice"


def info(capsys: pytest.CaptureFixture[str], db: Path) -> tuple[str, dict[str, object]]:
    code, out, err = run(capsys, "info", "--db", str(db))
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith("analytics"))
    code, out, err = run(capsys, "info", "--db", str(db), "--json")
    assert code == 0, err
    return line, json.loads(out)


def test_info_says_whether_the_analytics_are_current(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line, data = info(capsys, warehouse)
    assert "never refreshed: run `labelgov refresh`" in line
    assert data["refreshed_data_version"] is None and data["stale"] is True

    refresh_cli(capsys, warehouse)
    line, data = info(capsys, warehouse)
    refreshed = data["data_version"]
    assert data["refreshed_data_version"] == refreshed and data["stale"] is False
    assert f"refreshed at data version {refreshed}; up to date" in line

    ingest(capsys, warehouse, "gold", GOLD, "gold.csv")
    line, data = info(capsys, warehouse)
    assert data["data_version"] != refreshed and data["refreshed_data_version"] == refreshed and data["stale"] is True
    assert f"refreshed at data version {refreshed}" in line
    assert "new data since the last refresh: run `labelgov refresh`" in line


def test_annotator_filter_round_trips_through_the_url(demo_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    at = go(open_app(demo_db, Role.ANALYST, monkeypatch), "annotators")
    everyone = at.dataframe[0].value
    with connect(demo_db, read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT annotator_id FROM annotators").fetchall()]
        as_of = as_of_version(con)
    assert at.sidebar.multiselect(key="f_annotators").options == sorted(ids)
    help_text = at.sidebar.selectbox(key="f_version").help
    assert "does not change the tree shown" in help_text and f"tree v{as_of}," in help_text

    picked = sorted(everyone["annotator_id"].tolist()[1:4])
    at.sidebar.multiselect(key="f_annotators").set_value(picked).run()
    narrowed = at.dataframe[0].value
    expected = query(demo_db, reliability.annotator_table, Filters(annotators=tuple(picked)))
    assert narrowed["annotator_id"].tolist() == expected["annotator_id"].tolist()
    assert sorted(narrowed["annotator_id"]) == picked and len(narrowed) < len(everyone)
    link = at.query_params["annotators"]
    assert (link[-1] if isinstance(link, list) else link) == ",".join(picked)

    # The same link opened in a new session: the widget shows the annotators and the page the same rows.
    shared = AppTest.from_file(APP, default_timeout=180)
    shared.query_params["annotators"] = ",".join(picked)
    shared.run()
    shared = go(shared, "annotators")
    assert shared.sidebar.multiselect(key="f_annotators").value == picked
    assert shared.dataframe[0].value["annotator_id"].tolist() == narrowed["annotator_id"].tolist()

    shared.sidebar.multiselect(key="f_annotators").set_value([]).run()
    assert "annotators" not in shared.query_params
    assert shared.dataframe[0].value["annotator_id"].tolist() == everyone["annotator_id"].tolist()
