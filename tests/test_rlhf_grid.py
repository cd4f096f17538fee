"""`seam rlhf-grid`: the pure estimators on hand-built numbers, config/CLI, the store round trip, the Saturation
page panel on a real DuckDB file, and (slow) a real `--quick` run on SmolLM2 with resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest

from analysis.options import from_args
from analysis.stats.rlhf import kl_estimate, kl_items, proxy_vs_real, win_items, win_rate
from analysis.storage import store
from analysis.study.rlhf_grid import RLHFGridConfig, cell_id, curve_rows, grid_source

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ pure estimators

def test_win_rate_counts_ties_half_and_has_an_interval():
    trained = [2.0, 1.0, 0.5, 3.0, 0.0, float("nan")]
    start = [1.0, 1.0, 1.0, 0.0, 0.0, 5.0]
    assert win_items(trained, start).tolist() == [1.0, 0.5, 0.0, 1.0, 0.5]  # the NaN pair is dropped
    p, lo, hi, n = win_rate(trained, start, n_resamples=500)
    assert n == 5 and math.isclose(p, 3 / 5), (p, n)
    assert 0 <= lo < p < hi <= 1, (lo, p, hi)
    # an unchanged policy sits exactly on the no-effect line with a zero-width interval
    same = win_rate([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same[:3] == (0.5, 0.5, 0.5), same
    with pytest.raises(ValueError):
        win_items([1.0], [1.0, 2.0])


def test_win_rate_interval_narrows_with_more_prompts():
    rng = np.random.default_rng(0)
    t, s = rng.normal(0.3, 1, 400), rng.normal(0, 1, 400)
    _, lo_small, hi_small, _ = win_rate(t[:20], s[:20], n_resamples=500)
    _, lo_big, hi_big, _ = win_rate(t, s, n_resamples=500)
    assert hi_big - lo_big < hi_small - lo_small, (hi_big - lo_big, hi_small - lo_small)


def test_kl_estimate_is_the_mean_log_ratio_of_the_policy_samples():
    lp_pol = [-3.0, -2.0, -4.0, -1.0]
    lp_ref = [-3.5, -2.0, -5.0, -0.5]
    assert kl_items(lp_pol, lp_ref).tolist() == [0.5, 0.0, 1.0, -0.5]
    kl, lo, hi, n = kl_estimate(lp_pol, lp_ref, n_resamples=500)
    assert n == 4 and math.isclose(kl, 0.25) and lo <= kl <= hi, (kl, lo, hi)
    # identical models: exactly zero
    assert kl_estimate([-1.0, -2.0], [-1.0, -2.0])[:3] == (0.0, 0.0, 0.0)


def test_kl_estimate_matches_the_analytic_kl_of_two_categoricals():
    """Monte-Carlo over samples of p: the mean log-ratio converges to KL(p || q)."""
    p, q = np.array([0.7, 0.2, 0.1]), np.array([0.4, 0.4, 0.2])
    ys = np.random.default_rng(1).choice(3, size=20000, p=p)
    kl, lo, hi, _ = kl_estimate(np.log(p[ys]), np.log(q[ys]), n_resamples=300)
    exact = float((p * np.log(p / q)).sum())
    assert lo <= exact <= hi and abs(kl - exact) < 0.01, (kl, lo, hi, exact)


def test_proxy_vs_real_ranks_and_disagreements():
    cells = [dict(policy="a", reward="x", proxy=0.9, real=0.8), dict(policy="a", reward="y", proxy=0.7, real=0.6),
             dict(policy="b", reward="x", proxy=0.5, real=0.9), dict(policy="b", reward="y", proxy=0.3, real=0.2),
             dict(policy="c", reward="x", proxy=float("nan"), real=0.5)]   # no proxy: left out
    res = proxy_vs_real(cells, n_resamples=300)
    assert res.rank.n == 4 and math.isclose(res.rank.value, 0.4), res.rank   # ranks 1,2,3,4 vs 2,3,1,4
    assert res.rank.lo <= res.rank.value <= res.rank.hi
    worst = res.disagreements[0]
    assert (worst["policy"], worst["reward"], worst["shift"]) == ("b", "x", -2.0), worst   # proxy ranks it too low
    assert {(c["policy"], c["reward"]) for c in res.disagreements} == {("a", "x"), ("a", "y"), ("b", "x")}
    perfect = proxy_vs_real([dict(policy=str(i), reward="r", proxy=i, real=10 * i) for i in range(5)], n_resamples=200)
    assert math.isclose(perfect.rank.value, 1.0) and perfect.disagreements == []
    assert math.isnan(proxy_vs_real(cells[:2]).rank.value)   # < 3 cells: undefined, not a number


# ------------------------------------------------------------------ config, CLI, keys

def _parse(argv):
    from analysis.cli import build_parser

    return build_parser().parse_args(argv)


def test_cli_flags_map_to_config(tmp_path):
    args = _parse(["rlhf-grid", "--policy", "p1", "--policy", "p2", "--reward", "r1", "--reward", "r2",
                   "--prompts", "data.jsonl", "--db", str(tmp_path / "x.duckdb"), "--judge", "j", "--steps", "5",
                   "--lr", "1e-4", "--beta", "0.1", "--seed", "3", "--num-generations", "3",
                   "--max-completion-length", "12", "--lora", "--no-proxy", "--quiet"])
    cfg = from_args(RLHFGridConfig, args)
    assert (cfg.policies, cfg.rewards, cfg.prompts, cfg.judge) == (["p1", "p2"], ["r1", "r2"], "data.jsonl", "j")
    assert (cfg.steps, cfg.lr, cfg.beta, cfg.seed, cfg.num_generations, cfg.max_completion_length) == (5, 1e-4, 0.1, 3, 3, 12)
    assert cfg.lora and not cfg.proxy and not cfg.progress and cfg.rlhf_dir == tmp_path / "rlhf"
    json.dumps(cfg.to_dict())


def test_quick_is_one_small_cell_but_keeps_explicit_settings():
    q = RLHFGridConfig(policies=["a", "b"], rewards=["x", "y"], quick=True, steps=3)
    assert (q.policies, q.rewards) == (["a"], ["x"]), (q.policies, q.rewards)
    assert q.steps == 3 and q.eval_prompts == 8 and q.num_generations == 2 and q.judge_pairs == 128


@pytest.mark.parametrize("bad", [dict(num_generations=1), dict(steps=0), dict(beta=-1.0),
                                 dict(rewards=["r"], judge="r")])
def test_config_refuses_bad_settings(bad):
    with pytest.raises(ValueError):
        RLHFGridConfig(**bad)


def test_cli_error_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "analysis.cli", "rlhf-grid", "--reward", "r", "--judge", "r",
                          "--db", str(tmp_path / "x.duckdb")], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "judge must not be one of the grid's RMs" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_cell_keys_change_with_results_relevant_settings_only():
    a = RLHFGridConfig(policies=["p"], rewards=["r"])
    assert grid_source(a, "j") == grid_source(RLHFGridConfig(policies=["p"], rewards=["r"], progress=False,
                                                             db=Path("/elsewhere/x.duckdb")), "j")
    assert grid_source(a, "j") != grid_source(RLHFGridConfig(beta=0.2), "j")
    assert grid_source(a, "j") != grid_source(a, "other judge")
    src = grid_source(a, "j")
    assert cell_id("p", "r", src) != cell_id("p", "r2", src)
    assert cell_id("/models/my pm/", "builtin:x", src).startswith("my-pm__builtin-x__")


def test_curve_rows_take_trl_step_logs_only():
    hist = [{"loss": 0.1, "rewards/rm/mean": 0.5, "rewards/rm/std": 0.1, "kl": 0.0, "completions/mean_length": 8.0,
             "entropy": 2.0, "step": 1},
            {"loss": 0.2, "rewards/rm/mean": 0.7, "kl": 0.01, "completions/mean_length": 6.0, "step": 2},
            {"train_runtime": 3.0, "train_loss": 0.15, "step": 2}]
    rows = curve_rows(hist)
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["rm_reward"] == 0.7 and rows[1]["rm_reward_std"] is None


# ------------------------------------------------------------------ store + page (real DuckDB file)

def _cell(policy, reward, score, source="rlhf-grid:test", **kw):
    return dict(policy=policy, reward=reward, source=source, cell_id=cell_id(policy, reward, source),
                run_id="r", algorithm="trl-rloo", score=score, score_lo=max(0.0, score - 0.1),
                score_hi=min(1.0, score + 0.1), n_eval=48, judge="judge-rm", judge_kind="proxy judge",
                judge_start=0.0, judge_trained=score - 0.5, judge_gain=score - 0.5, judge_gain_lo=score - 0.6,
                judge_gain_hi=score - 0.4, kl=0.02, kl_lo=0.01, kl_hi=0.03, steps=24, seed=0, beta=0.05,
                model_dir="/x", wall_s=60.0, config={"steps": 24}, **kw)


def _curve(c):
    return [dict(source=c["source"], cell_id=c["cell_id"], policy=c["policy"], reward=c["reward"], step=s,
                 rm_reward=0.1 * s, rm_reward_std=0.05, kl=0.001 * s, mean_length=20.0, loss=0.0, entropy=2.0)
            for s in (1, 2, 3)]


def test_store_roundtrip_info_and_queries(tmp_path):
    from analysis.pipeline.info import db_info
    from analysis.queries.rlhf import rlhf_cells, rlhf_curves
    from analysis.study.rlhf_grid import finished_cells

    db = tmp_path / "g.duckdb"
    store.import_rlhf_csv(db, _csv(tmp_path))          # imported rows coexist (their new columns stay NULL)
    c = _cell("pm-a", "rm-x", 0.7)
    store.write_rlhf_cell(db, c, _curve(c))
    store.write_rlhf_cell(db, c, _curve(c))           # rewriting a cell replaces it, never duplicates
    assert finished_cells(db) == {c["cell_id"]}
    con = store.connect(db)
    try:
        cells = rlhf_cells(con)
        assert len(cells) == 1 and cells["score"][0] == 0.7 and cells["judge_kind"][0] == "proxy judge"
        assert len(rlhf_curves(con, "rlhf-grid:test")) == 3
        assert con.execute("SELECT count(*) FROM rlhf_results WHERE cell_id IS NULL").fetchone()[0] == 1
    finally:
        con.close()
    info = db_info(db)
    assert info["rlhf_grid"] and info["rlhf_grid"][0]["curve_steps"] == 3, info["rlhf_grid"]


def _csv(tmp_path):
    p = tmp_path / "runs.csv"
    p.write_text("pm,rm,score\npm-a,rm-x,0.5\n")
    return p


def test_saturation_page_shows_real_grid_curves_and_proxy_comparison(tmp_path, monkeypatch, find_frame):
    from streamlit.testing.v1 import AppTest

    from analysis.data import synthetic

    db = synthetic.make_synthetic_db(tmp_path / "s.duckdb", 60, seed=3)
    # a 2 x 2 real grid on the synthetic models; the proxy comes from the real proxy query on their scores
    grid = {("pm-sft-1k", "rm-10k"): 0.2, ("pm-sft-1k", "rm-100k"): 0.9, ("pm-sft-10k", "rm-10k"): 0.5,
            ("pm-sft-10k", "rm-100k"): 0.7}
    for (p, r), s in grid.items():
        c = _cell(p, r, s)
        store.write_rlhf_cell(db, c, _curve(c))
    monkeypatch.setenv("SEAM_DB", str(db))
    monkeypatch.setenv("SEAM_LABELS", str(tmp_path / "labels.sqlite"))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page("views/saturation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    table = find_frame(at, "PM", "RM", "win rate [95%]", "KL reached, nats [95%]")
    assert len(table) == 4 and "90.0% [80.0%, 100.0%]" in set(table["win rate [95%]"]), table
    comp = find_frame(at, "proxy rank", "real rank", "real − proxy rank")
    assert len(comp) == 4 and sorted(comp["real rank"]) == [1.0, 2.0, 3.0, 4.0], comp
    rho = [m for m in at.metric if "Spearman" in m.label]
    assert rho and "[" in rho[0].value, [m.label for m in at.metric]
    assert any("proxy judge" in c.value for c in at.caption), "the judge must be labelled as a proxy judge"


def test_saturation_page_without_rlhf_grid_says_how_to_run_it(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from analysis.data import synthetic

    db = synthetic.make_synthetic_db(tmp_path / "s.duckdb", 30, seed=4)
    monkeypatch.setenv("SEAM_DB", str(db))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=90)
    at.run()
    at.switch_page("views/saturation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("seam rlhf-grid" in c.value for c in at.caption)


# ------------------------------------------------------------------ end to end (real weights)

def _fetch(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.mark.slow
def test_quick_grid_end_to_end_and_resume(tmp_path):
    """`seam rlhf-grid --quick` on SmolLM2 with a 64-pair demo RM; the judge is the default proxy judge.
    A second run skips the finished cell and adds nothing."""
    from analysis.models.configs import RMTrainConfig
    from analysis.models.reward import train_reward_model
    from analysis.pipeline.demo import load_pairs

    models = Path(os.environ.get("SEAM_TEST_MODELS", tmp_path / "models"))
    rm = models / "test-rm-64"
    if not (rm / "config.json").exists():
        train_reward_model(load_pairs("builtin:chatterbot", exclude_fraction=0.5), rm,
                           RMTrainConfig(max_pairs=64, seed=0), progress=False)
    db = tmp_path / "q.duckdb"
    argv = [sys.executable, "-m", "analysis.cli", "rlhf-grid", "--quick", "--reward", str(rm), "--db", str(db),
            "--models-dir", str(models), "--quiet", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=1800)
    assert first.returncode == 0, first.stderr[-3000:]
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("SELECT policy, reward, score, score_lo, score_hi, n_eval, kl, kl_lo, kl_hi, steps, judge,"
                           " judge_kind, cell_id, model_dir, config FROM rlhf_results").fetchall()
        assert len(rows) == 1, rows
        pol, rew, s, lo, hi, n, kl, klo, khi, steps, judge, kind, cid, model_dir, config = rows[0]
        assert pol == "builtin:smollm2-135m-instruct" and rew == str(rm) and steps == 2 and n == 8
        assert 0 <= lo <= s <= hi <= 1, (lo, s, hi)
        assert klo <= kl <= khi and math.isfinite(kl), (klo, kl, khi)
        assert kind == "proxy judge" and judge != str(rm) and json.loads(config)["quick"] is True
        assert (Path(model_dir) / "config.json").exists() and (Path(model_dir) / "seam_rlhf.json").exists()
        curve = con.execute("SELECT step, rm_reward, kl, mean_length FROM rlhf_curves WHERE cell_id = ?"
                            " ORDER BY step", [cid]).fetchall()
        assert [c[0] for c in curve] == [1, 2] and all(c[1] is not None and 0 < c[3] <= 8 for c in curve), curve
        # the proxy precompute scored the same models, so the page can compare proxy and real
        assert con.execute("SELECT count(*) FROM pm_scores WHERE policy = ?", [pol]).fetchone()[0] > 0
        assert con.execute("SELECT count(*) FROM rm_scores WHERE reward = ?", [rew]).fetchone()[0] > 0
        mtime = Path(model_dir).stat().st_mtime_ns
    finally:
        con.close()
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout[second.stdout.index("{"):])
    assert summary["skipped"] == 1 and summary["cells"] == [], summary
    counts = _fetch(db, "SELECT (SELECT count(*) FROM rlhf_results), (SELECT count(*) FROM rlhf_curves)")
    assert counts == [(1, 2)], counts
    assert Path(model_dir).stat().st_mtime_ns == mtime, "the finished cell's policy was retrained"


@pytest.mark.slow
def test_sampled_logprobs_are_those_of_the_sampled_tokens(tmp_path):
    """The KL estimate's log-probs: under the sampling model itself the log-ratio is exactly 0, and for
    answers that ended with EOS they agree with `PolicyModel.score` of the decoded text (which rescores
    text + EOS), so padding and positions are handled right."""
    from analysis.models.policy import PolicyConfig, PolicyModel
    from analysis.study.rlhf_grid import SMOLLM, sample_with_logprobs

    models = Path(os.environ.get("SEAM_TEST_MODELS", tmp_path / "models"))
    pm = PolicyModel(SMOLLM, models_dir=models, config=PolicyConfig(device="cpu"))
    prompts = ["Hi", "What is your favourite colour and why do you like it?", "Tell me a joke", "Who are you?"]
    texts, lp, lp_ref = sample_with_logprobs(pm, prompts, max_new_tokens=40, seed=0, ref=pm)
    again = sample_with_logprobs(pm, prompts, max_new_tokens=40, seed=0)
    assert again[0] == texts, "sampling with the same seed must repeat"
    assert kl_items(lp, lp_ref).tolist() == [0.0] * 4
    rescored = [s for s, _ in pm.score(prompts, texts, progress=False)]
    ended = [i for i, t in enumerate(texts) if len(pm.tokenizer(t)["input_ids"]) < 35]
    assert ended, texts
    diffs = [abs(lp[i] - rescored[i]) for i in ended]
    assert np.median(diffs) < 1e-2, (diffs, texts)
