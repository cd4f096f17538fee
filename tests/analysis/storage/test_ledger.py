"""The run ledger and stage runner (analysis/storage/ledger.py, analysis/pipeline/runner.py)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from analysis.pipeline.info import db_info
from analysis.pipeline.runner import StageRunner
from analysis.storage import ledger

ROOT = Path(__file__).resolve().parents[3]

CHILD = """
import sys, time
from analysis.pipeline.runner import StageRunner
with StageRunner(sys.argv[1], "precompute", {"dataset": "x"}, {}, log=lambda m: None, run_id="killed") as run:
    run.stage("ingest", lambda: None)
    print("ingested", flush=True)
    time.sleep(120)
"""


def _runs(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {r[0]: (r[1], json.loads(r[2])) for r in con.execute("SELECT run_id, status, summary FROM runs").fetchall()}
    finally:
        con.close()


def test_sigkilled_run_is_marked_interrupted_by_the_next_run(tmp_path):
    db = tmp_path / "r.duckdb"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "ingested", "the child run did not get past its first stage"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    status, summary = _runs(db)["killed"]
    assert status == "running", f"before the next run the killed run reads {status!r}"
    assert summary["stages_done"] == ["ingest"], f"progress not recorded per stage: {summary}"
    shown = {r["run_id"]: r["status"] for r in db_info(db)["runs"]}
    assert shown["killed"] == "interrupted", f"seam info shows the killed run as {shown['killed']!r}"

    with StageRunner(db, "precompute", {}, {}, log=lambda m: None, run_id="next") as run:
        run.stage("ingest", lambda: None)
        run.finish({"ok": True})
    runs = _runs(db)
    status, summary = runs["killed"]
    assert status == "interrupted", f"killed run still {status!r} after the next run"
    assert summary["stages_done"] == ["ingest"] and summary["interrupted"]["detected_by"] == "next", summary
    assert runs["next"][0] == "done", runs["next"]


def test_live_run_is_not_marked_interrupted(tmp_path):
    """A nested run (the study runs precompute inside its own run) must not mark its live parent."""
    db = tmp_path / "r.duckdb"
    with StageRunner(db, "experiment", {"name": "x"}, {}, log=lambda m: None, run_id="outer") as outer:
        with StageRunner(db, "precompute", {}, {}, log=lambda m: None, run_id="inner") as inner:
            inner.finish({})
        assert _runs(db)["outer"][0] == "running", _runs(db)["outer"]
        outer.finish({})
    assert {k: v[0] for k, v in _runs(db).items()} == {"outer": "done", "inner": "done"}


def test_failed_stage_records_failed_with_progress(tmp_path):
    db = tmp_path / "r.duckdb"

    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        with StageRunner(db, "precompute", {}, {}, log=lambda m: None, run_id="f") as run:
            run.stage("a", lambda: 1)
            run.stage("b", boom)
    status, summary = _runs(db)["f"]
    assert status == "failed" and summary["stages_done"] == ["a"] and "boom" in summary["error"], summary


def test_old_experiment_runs_table_moves_into_the_ledger(tmp_path):
    """A DB written before the single ledger (an `experiment_runs` table) keeps its history, now as a view."""
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE experiment_runs (run_id VARCHAR PRIMARY KEY, name VARCHAR, status VARCHAR,"
                " started_at TIMESTAMP, finished_at TIMESTAMP, config JSON, versions JSON, summary JSON)")
    con.execute("INSERT INTO experiment_runs VALUES ('old', 'full', 'done', now(), now(), ?, '{}', '{}')",
                [json.dumps({"name": "full"})])
    con.close()
    ledger.start_run(db, "new", "experiment", {"name": "quick"}, {})
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT run_id, name, status FROM experiment_runs ORDER BY run_id").fetchall()
        kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'experiment_runs'"
                           ).fetchone()[0]
    finally:
        con.close()
    assert rows == [("new", "quick", "running"), ("old", "full", "done")], rows
    assert kind == "VIEW", kind
