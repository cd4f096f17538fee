"""`seam precompute --ray`: the model stages on a real local Ray instance (2 CPUs) against the single-process run.

Slow: real SmolLM2 PM and MiniLM RM on 12 samples. Every run is a `seam` subprocess, so a killed driver or
worker is a real SIGKILL. The single-process reference runs with one torch thread, as each 1-CPU Ray actor
does: fp32 sums depend on the thread count's reduction order (a 2-thread reference differs from a 1-thread
one by ~6e-5 on log-prob sums of ~-120), and the claim under test is that both paths compute the same
numbers from the same pages with the same code.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.storage import store

pytest.importorskip("ray", reason="the [ray] extra is not installed (scripts/test.sh installs it)")
psutil = pytest.importorskip("psutil")

pytestmark = pytest.mark.slow

PM = "builtin:smollm2-135m-instruct"
TOL = 1e-5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(models dir, RM dir): the bundled MiniLM with an untrained seeded head (`train-rm --max-pairs 0`)."""
    from analysis.models.reward import RMTrainConfig, train_reward_model
    from analysis.pipeline.demo import load_pairs

    root = Path(os.environ.get("SEAM_TEST_MODELS", tmp_path_factory.mktemp("models")))
    rm = root / "test-rm-0"
    if not (rm / "config.json").exists():
        train_reward_model(load_pairs("builtin:chatterbot", exclude_fraction=0.5), rm,
                           RMTrainConfig(max_pairs=0, seed=0), progress=False)
    return root, rm


def _cmd(db: Path, models, *extra: str) -> list[str]:
    root, rm = models
    return [sys.executable, "-m", "analysis.cli", "precompute", "builtin:chatterbot", "--policy", PM,
            "--reward", str(rm), "--models-dir", str(root), "--variants", "adv", "--k", "2", "--limit", "12",
            "--page-samples", "2", "--no-umap", "--quiet", "--db", str(db), *extra]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_memory_monitor_refresh_ms": "0",
       "RAY_USAGE_STATS_ENABLED": "0", "SEAM_RAY_OBJECT_STORE_MB": "200"}
RAY = ("--ray", "local:2")


def _run(cmd: list[str], **env) -> None:
    res = subprocess.run(cmd, env={**ENV, **env}, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd[3:])} failed ({res.returncode}):\n{res.stderr[-3000:]}"


def _start(cmd: list[str]) -> subprocess.Popen:
    # Own session: whatever the driver started (raylet, workers) can be cleaned up by its process group.
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _descendants(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _reap(proc: subprocess.Popen, started: list | None = None) -> None:
    """SIGKILL the driver if still running, its process group, and the Ray processes it started (Ray puts
    workers in groups of their own; orphaned, they linger until they notice their raylet is gone)."""
    started = (started or []) + _descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for p in started:
        try:
            p.kill()
        except psutil.Error:
            pass


def _cmdline(p) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # exited (or a zombie) meanwhile
        return ""


def _count(db: Path, sql: str) -> int:
    try:
        con = store.connect(db, timeout_s=0.5)
    except Exception:
        return -1
    try:
        return con.execute(sql).fetchone()[0]
    except Exception:
        return -1
    finally:
        con.close()


def _wait_for(proc: subprocess.Popen, cond, what: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _snapshot(db: Path) -> dict:
    con = store.connect(db)
    try:
        return {
            "responses": sorted(con.execute("SELECT response_id, sample_id, variant, text FROM responses").fetchall()),
            "pm": sorted(con.execute("SELECT response_id, policy, n_tokens, logprob_sum, logprob_mean"
                                     " FROM pm_scores").fetchall()),
            "rm": sorted(con.execute("SELECT response_id, reward, score FROM rm_scores").fetchall()),
            "seam": sorted(con.execute("SELECT sample_id, variant, policy, reward, k, seam, hack_rate"
                                       " FROM seam_metrics").fetchall()),
            "models": sorted(con.execute("SELECT model, role, sha256 FROM models").fetchall()),
        }
    finally:
        con.close()


def _assert_same(got: dict, ref: dict, label: str) -> None:
    """Same rows (keys and integers exactly), every float within TOL."""
    for key in ref:
        assert len(got[key]) == len(ref[key]), f"{label}: {key} has {len(got[key])} rows, reference {len(ref[key])}"
        for a, b in zip(got[key], ref[key]):
            exact = [x for x in zip(a, b) if not isinstance(x[1], float)]
            assert all(x == y for x, y in exact), f"{label}: {key} row {a} != reference {b}"
            worst = max([abs(x - y) for x, y in zip(a, b) if isinstance(y, float)], default=0.0)
            assert worst <= TOL, f"{label}: {key} row {a[:2]} differs by {worst:.2e} > {TOL} from {b}"
    assert ref["pm"] and ref["rm"] and ref["seam"], f"{label}: reference has no scores: {ref}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, models):
    db = tmp_path_factory.mktemp("ref") / "single.duckdb"
    _run(_cmd(db, models), OMP_NUM_THREADS="1")
    return _snapshot(db)


def test_ray_matches_single_process_and_survives_a_killed_worker(tmp_path, models, reference):
    """--ray local:2 gives the single-process rows; a worker SIGKILLed mid-scoring is restarted by Ray."""
    db = tmp_path / "ray.duckdb"
    proc = _start(_cmd(db, models, *RAY))
    killed = []
    try:
        def scoring_worker():
            workers = [p for p in _descendants(proc.pid) if "MapBatches(BatchScorer)" in _cmdline(p)]
            if workers and _count(db, "SELECT count(*) FROM pm_scores") > 0:
                workers[0].kill()
                killed.append(workers[0].pid)
                return True
            return False

        _wait_for(proc, scoring_worker, "a scoring actor with some PM scores committed")
        assert proc.wait(timeout=900) == 0, f"the run did not finish after worker {killed} was killed"
    finally:
        _reap(proc)
    assert killed, "no scoring worker was killed"
    _assert_same(_snapshot(db), reference, "ray (worker killed)")
    assert not (tmp_path / "ray.duckdb.parts").exists(), "parts should be removed once loaded"


def test_ray_rerun_after_killed_driver_gives_same_rows(tmp_path, models, reference):
    """SIGKILL the driver while it scores on Ray, rerun the same command: same rows as the single-process run."""
    db = tmp_path / "ray.duckdb"
    cmd = _cmd(db, models, *RAY)
    proc = _start(cmd)
    started = []
    try:
        _wait_for(proc, lambda: _count(db, "SELECT count(*) FROM pm_scores") > 0, "the first PM part")
        started = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        _reap(proc, started)
    partial = _count(db, "SELECT count(*) FROM pm_scores")
    assert 0 < partial < len(reference["pm"]), f"killed at {partial} of {len(reference['pm'])} PM scores"
    _run(cmd)
    _assert_same(_snapshot(db), reference, "ray (driver killed, rerun)")
    con = store.connect(db)
    statuses = [r[0] for r in con.execute("SELECT status FROM runs ORDER BY started_at").fetchall()]
    con.close()
    assert statuses[-1] == "done" and len(statuses) == 2, f"run ledger: {statuses}"
