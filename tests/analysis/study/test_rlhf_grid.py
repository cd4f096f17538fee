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

ROOT = Path(__file__).resolve().parents[3]


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


def _pairs(c, n=6, same_text_at=()):
    """Held-out pairs of a cell as `seam rlhf-grid` writes them (the real row builder, hand-made answers)."""
    from analysis.study.rlhf_grid import eval_pair_rows

    prompts = [f"prompt {i}" for i in range(n)]
    start = [f"start answer {i}" for i in range(n)]
    trained = [start[i] if i in same_text_at else f"trained answer {i} ({c['cell_id'][-10:]})" for i in range(n)]
    return eval_pair_rows(c["source"], c["cell_id"], c["policy"], c["reward"], prompts, start,
                          [0.1 * i for i in range(n)], trained, [0.2 * i for i in range(n)])


def test_eval_pairs_are_stored_with_their_cell_and_replaced_with_it(tmp_path):
    from analysis.queries.rlhf import rlhf_pair_cells

    db = tmp_path / "p.duckdb"
    c = _cell("pm-a", "rm-x", 0.7)
    pairs = _pairs(c, same_text_at=(2,))
    store.write_rlhf_cell(db, c, _curve(c), pairs)
    store.write_rlhf_cell(db, c, _curve(c), pairs)          # rewriting a cell replaces its pairs
    rows = _fetch(db, "SELECT idx, prompt, start_id, start_text, start_judge, trained_id, trained_text,"
                      " trained_judge FROM rlhf_eval_pairs ORDER BY idx")
    assert len(rows) == 6 and [r[0] for r in rows] == list(range(6)), rows
    assert rows[3][1:5] == ("prompt 3", pairs[3]["start_id"], "start answer 3", 0.1 * 3), rows[3]
    assert all(r[2] != r[5] for r in rows), "start and trained ids must differ, even for identical texts"
    assert rows[2][3] == rows[2][6], rows[2]
    # the starting PM's answer has one id across the PM's cells; the trained answer is per cell
    c2 = _cell("pm-a", "rm-y", 0.6)
    p2 = _pairs(c2)
    assert p2[0]["start_id"] == pairs[0]["start_id"] and p2[0]["trained_id"] != pairs[0]["trained_id"]
    con = store.connect(db)
    try:
        cells = rlhf_pair_cells(con)
    finally:
        con.close()
    assert cells[["cell_id", "n_pairs"]].values.tolist() == [[c["cell_id"], 6]], cells
    # pairs that cannot be written leave no result row behind: one transaction, so the cell is not
    # "finished" (and is rerun) rather than recorded without its pairs
    from analysis.study.rlhf_grid import finished_cells

    bad = _cell("pm-b", "rm-x", 0.5)
    broken = [{**p, "prompt": None} for p in _pairs(bad)]     # NOT NULL violated by the pairs insert
    with pytest.raises(duckdb.Error):
        store.write_rlhf_cell(db, bad, _curve(bad), broken)
    assert finished_cells(db) == {c["cell_id"]}, finished_cells(db)
    assert _fetch(db, f"SELECT count(*) FROM rlhf_curves WHERE cell_id = '{bad['cell_id']}'") == [(0,)]


def test_human_win_rate_per_cell_from_labels_in_either_order(tmp_path):
    """Hand labels on the pairs: trained wins 1, ties 1/2, start wins 0, whichever side the canonical a/b is;
    the interval is the judge's bootstrap; cells without labels are absent; other labels are ignored."""
    import pandas as pd

    from analysis.queries.rlhf import rlhf_human_win
    from analysis.storage.labels import LabelStore, consensus

    db = tmp_path / "h.duckdb"
    c, c2 = _cell("pm-a", "rm-x", 0.7), _cell("pm-a", "rm-y", 0.4)
    pa_, pb_ = _pairs(c, n=8), _pairs(c2, n=8)
    store.write_rlhf_cell(db, c, _curve(c), pa_)
    store.write_rlhf_cell(db, c2, _curve(c2), pb_)
    ls = LabelStore(tmp_path / "l.sqlite")
    # cell c: trained better on 0-3, tie on 4, start better on 5; 6 and 7 unlabeled -> (4 + 0.5) / 6
    for i, who in enumerate(["trained"] * 4 + ["tie", "start"]):
        s_id, t_id = pa_[i]["start_id"], pa_[i]["trained_id"]
        if who == "tie":
            ls.put(s_id, t_id, "alice", "tie", kind="rlhf")
        else:   # put() takes the label relative to the ids as given, and canonicalises the order itself
            first, second = (t_id, s_id) if i % 2 else (s_id, t_id)
            better = t_id if who == "trained" else s_id
            ls.put(first, second, "alice", "a" if better == first else "b", kind="rlhf")
    ls.put("x1", "x2", "alice", "a", kind="dataset")          # a label of another kind: not a pair of the grid
    cons = consensus(ls.all())
    con = store.connect(db)
    try:
        h = rlhf_human_win(con, cons, n_resamples=500)
        none = rlhf_human_win(con, pd.DataFrame(columns=["a_id", "b_id", "label"]))
    finally:
        con.close()
    assert h["cell_id"].tolist() == [c["cell_id"]], h
    r = h.iloc[0]
    assert (r["n"], r["wins"], r["ties"], r["losses"]) == (6, 4, 1, 1), r.to_dict()
    assert math.isclose(r["human"], 4.5 / 6), r.to_dict()
    assert 0 <= r["human_lo"] < r["human"] < r["human_hi"] <= 1, r.to_dict()
    assert none.empty


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
    # 4 cells: the exact permutation p-value is shown, not a (degenerate) bootstrap interval over 4 cells
    assert rho and "[" not in rho[0].value, [(m.label, m.value) for m in at.metric]
    assert any("exact permutation p" in c.value and "n = 4 cells" in c.value for c in at.caption), \
        [c.value for c in at.caption]
    assert any("proxy judge" in c.value for c in at.caption), "the judge must be labelled as a proxy judge"


_GRID = {("pm-sft-1k", "rm-10k"): 0.2, ("pm-sft-1k", "rm-100k"): 0.9, ("pm-sft-10k", "rm-10k"): 0.5,
         ("pm-sft-10k", "rm-100k"): 0.7}


def _grid_db_with_pairs(tmp_path, monkeypatch, n_pairs=6):
    """Synthetic DB + a 2 x 2 real grid whose cells carry their held-out pairs; the app points at it."""
    from analysis.data import synthetic

    db = synthetic.make_synthetic_db(tmp_path / "s.duckdb", 60, seed=3)
    cells = {}
    for (p, r), sc in _GRID.items():
        c = _cell(p, r, sc)
        cells[(p, r)] = (c, _pairs(c, n=n_pairs))
        store.write_rlhf_cell(db, c, _curve(c), cells[(p, r)][1])
    monkeypatch.setenv("SEAM_DB", str(db))
    monkeypatch.setenv("SEAM_LABELS", str(tmp_path / "labels.sqlite"))
    return db, cells


def _app(query=None, page="views/saturation.py"):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=90)
    at.run()
    at.query_params.update(query or {})
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _rlhf_queue(cell):
    """The Spot-check page as alice, pairs "RLHF: start vs trained", one cell or all. Set through the widgets:
    AppTest does not apply a URL value to a segmented control."""
    at = _app({"annotator": "alice"}, page="views/spotcheck.py")
    next(w for w in at.get("button_group") if w.key == "c_kind").set_value("rlhf").run()
    if cell:
        at.selectbox(key="c_cell").set_value(cell).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_spotcheck_queues_rlhf_pairs_blind_per_cell_and_labels_them(tmp_path, monkeypatch, label_button,
                                                                    find_frame):
    import sqlite3

    from analysis.queries.spotcheck import spotcheck_pairs

    db, cells = _grid_db_with_pairs(tmp_path, monkeypatch)
    c, pairs = cells[("pm-sft-1k", "rm-100k")]
    at = _rlhf_queue(c["cell_id"])
    progress = [str(p.proto) for p in at.get("progress")]
    assert any("0 of 6 pairs" in p for p in progress), progress
    shown = [t.value for t in at.text]
    prompt = next(t for t in shown if t.startswith("prompt "))
    i = int(prompt.split()[1])
    assert {pairs[i]["start_text"], pairs[i]["trained_text"]} <= set(shown), shown
    # blind: no model name, role or judge score on screen before the label
    visible = " ".join(shown + [m.value for m in at.markdown] + [x.value for x in at.caption])
    for secret in ("pm-sft-1k", "rm-100k", "starting PM", "trained policy", "judge reward"):
        assert secret not in visible, f"{secret!r} is visible before labeling"
    label_button(at, "a").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with sqlite3.connect(tmp_path / "labels.sqlite") as con:
        rows = con.execute("SELECT kind, sample_id, a_id, b_id, shown_left, label FROM labels").fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("rlhf", c["cell_id"]), rows
    assert {rows[0][2], rows[0][3]} == {pairs[i]["start_id"], pairs[i]["trained_id"]}, rows
    reveal = find_frame(at, "side", "was", "model", "judge reward")
    assert set(reveal["was"]) == {"starting PM", "trained policy"}, reveal
    left_was = reveal["was"][0]
    assert (rows[0][4] == pairs[i]["trained_id"]) == (left_was == "trained policy"), (rows, reveal)
    # all cells: every cell's pairs, cells taking turns; sides are randomised across the queue
    q = spotcheck_pairs(store.connect(db), kind="rlhf", n=24, seed=0)
    assert len(q) == 24 and q["sample_id"].head(4).nunique() == 4, q["sample_id"].tolist()
    trained_left = [(json.loads(r.b_prov if r.swap else r.a_prov)["role"] == "trained policy") for r in q.itertuples()]
    assert 0 < sum(trained_left) < len(q), trained_left
    at2 = _rlhf_queue(None)
    progress = [str(p.proto) for p in at2.get("progress")]
    assert any("1 of 24 pairs" in p for p in progress), progress


def test_saturation_panel_prefers_human_labels_where_a_cell_has_them(tmp_path, monkeypatch, find_frame):
    from analysis.storage.labels import LabelStore

    _, cells = _grid_db_with_pairs(tmp_path, monkeypatch)
    pairs = cells[("pm-sft-1k", "rm-10k")][1]            # judge: 20% win rate; people: 5 of 6 trained wins
    ls = LabelStore(tmp_path / "labels.sqlite")
    for j, p in enumerate(pairs):
        better = p["start_id"] if j == 5 else p["trained_id"]
        ls.put(p["start_id"], p["trained_id"], "alice", "a" if better == p["start_id"] else "b", kind="rlhf")
    at = _app()
    table = find_frame(at, "PM", "RM", "n", "measured by", "win rate [95%]", "judge win rate [95%]")
    row = table[(table["PM"] == "pm-sft-1k") & (table["RM"] == "rm-10k")].iloc[0]
    assert row["measured by"] == "human labels, n=6" and row["n"] == 6, row.to_dict()
    assert row["win rate [95%]"].startswith("83.3%") and row["judge win rate [95%]"].startswith("20.0%"), row.to_dict()
    others = table[~((table["PM"] == "pm-sft-1k") & (table["RM"] == "rm-10k"))]
    assert set(others["measured by"]) == {"proxy judge"} and set(others["n"]) == {48}, others
    assert any("1 of 4 cell(s) use human labels" in x.value for x in at.caption), [x.value for x in at.caption]
    comp = find_frame(at, "real (win rate)", "real measured by", "proxy rank", "real rank")
    human_row = comp[comp["real measured by"] == "human labels, n=6"]
    assert len(human_row) == 1 and float(human_row["real (win rate)"].iloc[0]) > 0.8, comp


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
        # every held-out pair is stored for hand labels: one per eval prompt, with both judge scores
        pairs = con.execute("SELECT idx, prompt, start_id, start_text, trained_id, trained_text, start_judge,"
                            " trained_judge FROM rlhf_eval_pairs WHERE cell_id = ? ORDER BY idx", [cid]).fetchall()
        assert len(pairs) == n == 8 and [p[0] for p in pairs] == list(range(8)), pairs
        assert len({p[1] for p in pairs}) == 8 and all(p[2] != p[4] for p in pairs), pairs
        assert all(math.isfinite(p[6]) and math.isfinite(p[7]) for p in pairs), pairs
        wins = sum(1.0 if p[7] > p[6] else 0.5 if p[7] == p[6] else 0.0 for p in pairs) / len(pairs)
        assert math.isclose(wins, s), (wins, s)   # the stored scores reproduce the cell's judge win rate
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
    assert _fetch(db, "SELECT count(*) FROM rlhf_eval_pairs") == [(8,)], "the resumed run rewrote the pairs"
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
