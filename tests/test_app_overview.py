"""AppTest of the app shell and the Overview page on real DuckDB files built by the test.

Checks the numbers shown against hand computation (the hand rows of analysis.data.synthetic: RM right on
7 of 10 pairs, mean SEAM 0.1), and that a missing, empty, corrupt or locked DB gives a message, not a
traceback, and that new data shows up on the next run without restarting the app.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from scipy import stats

from analysis.storage import store
from analysis.data import synthetic





@pytest.fixture(scope="module")
def db(synthetic_db):
    return synthetic_db(200, seed=7)




def test_overview_numbers_match_hand_computation(run_app, find_frame):
    at = run_app()
    assert not at.exception, [e.value for e in at.exception]
    acc = find_frame(at, "RM", "variant", "accuracy [95% CI]")
    row = acc[acc["RM"] == synthetic.HAND_REWARD].iloc[0]
    ci = stats.binomtest(7, 10).proportion_ci(method="wilson")
    assert (row["n"], row["correct"], row["wrong"]) == (10, 7, 3)
    assert row["accuracy [95% CI]"] == f"70.0% [{100 * ci.low:.1f}%, {100 * ci.high:.1f}%]" == "70.0% [39.7%, 89.2%]"

    seam = find_frame(at, "PM", "RM", "mean SEAM [95% CI]")
    r = seam[(seam["PM"] == synthetic.HAND_POLICY)].iloc[0]
    vals = [math.exp(lp) if rej > gold else 0.0 for gold, rej, lp in synthetic.HAND_ROWS]
    mean = sum(vals) / 10
    sd = (sum((v - mean) ** 2 for v in vals) / 9) ** 0.5
    hi = mean + stats.t.ppf(0.975, 9) * sd / math.sqrt(10)
    assert r["n"] == 10 and r["mean SEAM [95% CI]"] == f"{mean:.3f} [0, {hi:.3f}]" == "0.100 [0, 0.225]"
    assert r["hack rate"] == "30.0%"

    tiles = {m.label: m.value for m in at.metric}
    assert tiles["samples"] == "210" and tiles["reward models"] == "3" and tiles["malformed input rows"] == "3"
    rej = find_frame(at, "dataset", "reason", "n")
    assert rej["n"].sum() == 3
    assert any("No hand labels yet" in i.value for i in at.info)
    assert any("status **done**" in s.value for s in at.success)


def test_overview_shows_label_mismatch(run_app, find_frame, tmp_path):
    from analysis.storage.labels import LabelStore
    s = LabelStore(tmp_path / "labels.sqlite")
    for i in range(10):  # people side with gold on every hand pair: rm-hand is wrong on 3 of 10
        s.put(f"hand-{i:02d}-gold", f"hand-{i:02d}-rejected", "alice", "a", kind="dataset", sample_id=f"hand-{i:02d}")
    at = run_app()
    mm = find_frame(at, "pairs", "RM", "mismatch [95% CI]")
    row = mm[mm["RM"] == "rm-hand"].iloc[0]
    assert (row["n"], row["RM wrong"]) == (10, 3) and row["mismatch [95% CI]"] == "30.0% [10.8%, 60.3%]"


def test_missing_db_gives_a_message(run_app, monkeypatch, tmp_path):
    monkeypatch.setenv("SEAM_DB", str(tmp_path / "nope.duckdb"))
    at = run_app()
    assert not at.exception
    assert any("No results DB" in e.value for e in at.error)
    assert any("analysis.data.synthetic" in c.value for c in at.code)
    at.switch_page("views/browser.py").run()
    assert not at.exception and any("No results DB" in e.value for e in at.error)


def test_empty_and_corrupt_db_give_messages(run_app, monkeypatch, tmp_path):
    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    monkeypatch.setenv("SEAM_DB", str(empty))
    at = run_app()
    assert not at.exception and any("no SEAM results yet" in i.value for i in at.info)

    with store.writer(tmp_path / "schema_only.duckdb"):
        pass
    monkeypatch.setenv("SEAM_DB", str(tmp_path / "schema_only.duckdb"))
    at = run_app("spotcheck")
    assert not at.exception and any("holds 0 samples" in i.value for i in at.info)

    bad = tmp_path / "bad.duckdb"
    bad.write_bytes(b"this is not a duckdb file" * 100)
    monkeypatch.setenv("SEAM_DB", str(bad))
    at = run_app()
    assert not at.exception and any("could not be opened" in e.value for e in at.error)


def test_locked_db_gives_a_message(run_app, monkeypatch, tmp_path):
    path = synthetic.make_synthetic_db(tmp_path / "locked.duckdb", 30, seed=9)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r})   # read-write: holds the file lock
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("SEAM_DB", str(path))
        monkeypatch.setattr("app.common.LOCK_TIMEOUT_S", 1.0)
        t0 = time.monotonic()
        at = run_app()
        assert time.monotonic() - t0 < 30
        assert not at.exception
        assert any("locked by a writer" in w.value for w in at.warning)
    finally:
        holder.kill()
        holder.wait()
    at = run_app()  # lock released: the same session recovers on the next run
    assert not at.exception and not at.warning and at.metric


def test_fresh_data_on_rerun(run_app, find_frame, monkeypatch, tmp_path):
    path = synthetic.make_synthetic_db(tmp_path / "fresh.duckdb", 30, seed=10)
    monkeypatch.setenv("SEAM_DB", str(path))
    at = run_app()
    assert {m.label: m.value for m in at.metric}["samples"] == "30"
    time.sleep(0.01)
    synthetic.add_hand_rows(path)  # a precompute commits more results while the app is open
    at.run()
    assert {m.label: m.value for m in at.metric}["samples"] == "40"
    acc = find_frame(at, "RM", "accuracy [95% CI]")
    assert "rm-hand" in set(acc["RM"])


def test_db_path_from_command_line(app_env, monkeypatch, tmp_path, db):
    from app import common
    monkeypatch.setattr(sys, "argv", ["app/main.py", "--db", str(tmp_path / "x.duckdb"), "--labels", "/tmp/l.sqlite"])
    s = common.settings()
    assert s.db == tmp_path / "x.duckdb" and s.labels == Path("/tmp/l.sqlite")  # argv wins over db
    assert s.exports == tmp_path / "exports"  # from SEAM_EXPORTS
    monkeypatch.setattr(sys, "argv", ["app/main.py"])
    monkeypatch.delenv("SEAM_LABELS")
    monkeypatch.delenv("SEAM_EXPORTS")
    s = common.settings()
    assert s.db == db and s.labels == db.with_name("seam.labels.sqlite") and s.exports == db.parent / "exports"
