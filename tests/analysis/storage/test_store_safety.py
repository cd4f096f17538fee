"""Store safety: a locked DB is reported (who, how long, what to do), and paths with quotes work in SQL."""

import json
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from analysis.storage import store
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.precompute import run_precompute


def _hold_lock(db, read_only):
    """Another process holding `db` open (as a forgotten notebook connection would); returns it once it holds."""
    code = (f"import duckdb, sys, time; c = duckdb.connect({str(db)!r}, read_only={read_only}); "
            "print('holding', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding", "lock-holder process did not start"
    return proc


@pytest.mark.parametrize("read_only", [True, False], ids=["notebook-read-only", "read-write"])
def test_writer_on_locked_db_says_who_and_gives_up_after_configured_time(tmp_path, monkeypatch, capfd, read_only):
    db = tmp_path / "s.duckdb"
    with store.writer(db):
        pass
    holder = _hold_lock(db, read_only)
    try:
        monkeypatch.setenv("SEAM_LOCK_TIMEOUT", "3")
        t0 = time.monotonic()
        with pytest.raises(store.StoreLocked) as err:
            with store.writer(db):
                pass
        waited = time.monotonic() - t0
    finally:
        holder.kill()
        holder.wait()
    msg = str(err.value)
    stderr = capfd.readouterr().err
    assert 2.5 <= waited < 20, f"writer gave up after {waited:.1f}s, configured 3s"
    assert f"PID {holder.pid}" in msg, f"the error does not name the holder PID {holder.pid}: {msg}"
    assert "read_only=True" in msg and "README" in msg, f"the error does not point to the notebook pattern: {msg}"
    assert "\n" not in msg, f"the error is not one line: {msg!r}"
    assert isinstance(err.value, ValueError), "StoreLocked must reach the CLI's one-line error path"
    assert "waiting" in stderr and f"PID {holder.pid}" in stderr, f"no waiting notice on stderr: {stderr!r}"


def test_lock_timeout_env_must_be_seconds(monkeypatch):
    monkeypatch.setenv("SEAM_LOCK_TIMEOUT", "five")
    with pytest.raises(ValueError, match="SEAM_LOCK_TIMEOUT"):
        store.lock_timeout_s()


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad answer {i}"} for i in range(6)]


def test_parts_load_with_quote_in_db_path(tmp_path):
    """Parts of a DB under "o'brien/" are written and loaded (paths reach DuckDB as parameters, not SQL text)."""
    from analysis.pipeline import distributed
    from analysis.pipeline.scoring import ScorerSpec

    folder = tmp_path / "o'brien"
    data = _write_jsonl(folder / "d.jsonl", ROWS)
    db = folder / "s.duckdb"
    cfg = PrecomputeConfig(dataset=str(data), db=db, variants=["rejected"], umap=False, progress=False)
    run_precompute(cfg, log=lambda m: None)
    con = store.connect(db)
    ids = [r[0] for r in con.execute("SELECT response_id FROM responses ORDER BY 1").fetchall()]
    con.close()
    part = distributed.write_part(distributed.parts_dir(db, ScorerSpec("rm", "RM'x", str(folder))),
                                  pa.table({"response_id": ids, "reward": ["RM'x"] * len(ids),
                                            "score": [float(i) for i in range(len(ids))]}))
    assert "o'brien" in str(part) and part.exists(), part
    assert store.load_parts(db, "rm_scores", [part]) == len(ids) == 2 * len(ROWS)
    con = store.connect(db)
    n = con.execute("SELECT count(*) FROM rm_scores WHERE reward = 'RM''x'").fetchone()[0]
    con.close()
    assert n == len(ids), f"loaded {n} of {len(ids)} scores"