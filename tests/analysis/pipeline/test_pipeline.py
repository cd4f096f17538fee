"""The real precompute: SmolLM2 PM + MiniLM RM on a handful of samples, resume after SIGKILL, HH-RLHF.

Slow: these load real weights (converted once into a shared cache dir for the session).
"""

import gzip
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.storage import store
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.demo import load_pairs
from analysis.pipeline.precompute import run_precompute

pytestmark = pytest.mark.slow

HH = Path(__file__).resolve().parents[4] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
PM = "builtin:smollm2-135m-instruct"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """Converted PM and trained RM shared by the tests of this module (cache/ is reused if present)."""
    return Path(os.environ.get("SEAM_TEST_MODELS", tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def rm_dir(models_dir):
    from analysis.models.reward import RMTrainConfig, train_reward_model

    out = models_dir / "test-rm-64"
    if not (out / "config.json").exists():
        pairs = load_pairs("builtin:chatterbot", exclude_fraction=0.5)
        train_reward_model(pairs, out, RMTrainConfig(max_pairs=64, seed=0), progress=False)
    return str(out)


def _cfg(db, models_dir, rm_dir, **kw):
    base = dict(dataset="builtin:chatterbot", policies=[PM], rewards=[rm_dir], db=db, models_dir=models_dir,
                variants=["contrast", "adv", "generated"], k=2, limit=5, fraction=0.02, policy_samples=2,
                gen_max_new_tokens=12, progress=False, page_samples=2)
    base.update(kw)
    return PrecomputeConfig(**base)


def _snapshot(db):
    con = store.connect(db)
    try:
        return {
            "responses": sorted(con.execute("SELECT response_id, variant, text FROM responses").fetchall()),
            "pm": sorted(con.execute("SELECT response_id, policy, logprob_sum, n_tokens FROM pm_scores").fetchall()),
            "rm": sorted(con.execute("SELECT response_id, reward, score FROM rm_scores").fetchall()),
            "seam": sorted(con.execute("SELECT sample_id, variant, seam, hack_rate, k FROM seam").fetchall()),
        }
    finally:
        con.close()


def _assert_same(a, b, tol=1e-4):
    assert a["responses"] == b["responses"]
    for key in ("pm", "rm", "seam"):
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key]):
            for u, v in zip(x, y):
                if isinstance(u, float):
                    assert u == pytest.approx(v, abs=tol)
                else:
                    assert u == v


def test_real_pipeline_small(tmp_path, models_dir, rm_dir):
    db = tmp_path / "seam.duckdb"
    summary = run_precompute(_cfg(db, models_dir, rm_dir))
    con = store.connect(db)
    variants = dict(con.execute("SELECT variant, count(*) FROM responses GROUP BY 1").fetchall())
    n = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    assert n == 5
    assert variants["gold"] == 5 and variants["contrast"] == 10 and variants["adv"] == 10
    # every draw is kept (identical texts included) or counted as empty: nothing vanishes in dedup
    for v in ("generated", "policy"):
        assert variants[v] > 0 and variants[v] + summary["counts"].get(f"{v}_empty", 0) == 10
    total = sum(variants.values())
    assert con.execute("SELECT count(*) FROM pm_scores").fetchone()[0] == total
    assert con.execute("SELECT count(*) FROM rm_scores").fetchone()[0] == total
    # log-probs are real: negative, token counts positive, mean = sum / n
    assert con.execute("SELECT max(logprob_sum) < 0, min(n_tokens) > 0,"
                       " max(abs(logprob_mean - logprob_sum / n_tokens)) < 1e-9 FROM pm_scores").fetchone() == (True, True, True)
    rows = con.execute("SELECT variant, count(*), min(seam) >= 0, max(seam) <= 1 FROM seam GROUP BY 1").fetchall()
    assert {r[0]: r[1:] for r in rows} == {v: (5, True, True) for v in ("contrast", "adv", "generated")}
    assert con.execute("SELECT count(*) FROM prompt_map").fetchone()[0] == 5
    prov = con.execute("SELECT provenance->>'$.kinds' FROM responses WHERE variant = 'adv' LIMIT 1").fetchone()[0]
    assert prov and prov != "[]"
    models = dict(con.execute("SELECT role, sha256 FROM models").fetchall())
    assert len(models["policy"]) == 64 and len(models["reward"]) == 64
    run = con.execute("SELECT status, config->>'$.k', versions->>'$.torch' FROM runs").fetchone()
    assert run[0] == "done" and run[1] == "2" and run[2]
    con.close()
    assert summary["pm_tokens_per_s"] > 0
    # rerun: a no-op with identical numbers
    before = _snapshot(db)
    run_precompute(_cfg(db, models_dir, rm_dir))
    _assert_same(_snapshot(db), before, tol=0)


def test_resume_after_sigkill_gives_same_results(tmp_path, models_dir, rm_dir):
    """Kill -9 the CLI mid-run (twice), rerun the same command: same rows and numbers as a clean run."""
    ref_db = tmp_path / "ref.duckdb"
    run_precompute(_cfg(ref_db, models_dir, rm_dir, limit=4))
    db = tmp_path / "killed.duckdb"
    cmd = [sys.executable, "-m", "analysis.cli", "precompute", "builtin:chatterbot", "--policy", PM,
           "--reward", rm_dir, "--models-dir", str(models_dir), "--variants", "contrast,adv,generated",
           "--k", "2", "--limit", "4", "--fraction", "0.02", "--policy-samples", "2",
           "--gen-max-new-tokens", "12", "--page-samples", "2", "--db", str(db), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def count(table):
        try:
            con = store.connect(db, timeout_s=0.5)
        except Exception:
            return -1
        try:
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        except Exception:
            return -1
        finally:
            con.close()

    # 1st kill: during generation; 2nd kill: during PM scoring (after some pages are committed)
    for table, cond in (("responses", lambda n: n > 4), ("pm_scores", lambda n: n > 0)):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            if db.exists() and cond(count(table)):
                break
            time.sleep(0.3)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    _assert_same(_snapshot(db), _snapshot(ref_db))
    con = store.connect(db)
    statuses = [r[0] for r in con.execute("SELECT status FROM runs ORDER BY started_at").fetchall()]
    con.close()
    assert statuses[-1] == "done" and "interrupted" in statuses  # the killed runs stay visible as such


@pytest.mark.skipif(not HH.exists(), reason="../shared/data (HH-RLHF test file) is not present in a user's clone")
def test_hh_rlhf_file_end_to_end(tmp_path, models_dir, rm_dir):
    """The real HH file: every row accounted for; dataset pairs scored; RM accuracy has a Wilson interval."""
    from analysis.stats.metrics import wilson

    src = tmp_path / "hh.jsonl"
    with gzip.open(HH, "rt") as f:
        src.write_text(f.read())
    db = tmp_path / "hh.duckdb"
    run_precompute(PrecomputeConfig(dataset=str(src), policies=[PM], rewards=[rm_dir], db=db,
                                    models_dir=models_dir, variants=["rejected"], limit=12, umap=False,
                                    progress=False, max_length=512))
    con = store.connect(db)
    assert con.execute("SELECT count(*) FROM samples").fetchone()[0] == 12
    assert con.execute("SELECT count(*) FROM responses WHERE variant = 'rejected'").fetchone()[0] == 12
    assert con.execute("SELECT count(*) FROM pm_scores").fetchone()[0] == 24
    correct, wrong, ties = con.execute("SELECT correct, wrong, ties FROM rm_accuracy WHERE variant = 'rejected'").fetchone()
    assert correct + wrong + ties == 12
    assert 0 <= wilson(correct, correct + wrong).lo <= wilson(correct, correct + wrong).hi <= 1
    assert con.execute("SELECT count(*) FROM seam WHERE variant = 'rejected'").fetchone()[0] == 12
    con.close()
