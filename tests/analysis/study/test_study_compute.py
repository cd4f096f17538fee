"""Each analysis of `seam experiment` as a pure function on a hand-built 3-prompt dataset (no models)."""

import math

import numpy as np
import pytest

from analysis.study import augmentation, mismatch, model_quality, saturation, seam_validation, selection
from analysis.study.config import ExperimentConfig
from analysis.study.data import build
from analysis.study.retrain import pool, retrain_ids

PM, RM0, RM1, J = "pm", "rm-0", "rm-1", "judge"


def _data():
    resp, rm, pm, seam_rows, prompt = {}, {}, {}, [], {}

    def add(rid, sid, ds, variant, idx, text, gen=None, scores=(), lp=None):
        resp[rid] = dict(sample_id=sid, dataset=ds, variant=variant, idx=idx, text=text, generator=gen)
        for ref, v in zip((RM0, RM1, J), scores):
            rm[(rid, ref)] = v
        if lp is not None:
            pm[(rid, PM)] = (lp * 4, 4, lp)

    for i in range(3):   # bon prompts: two PM samples each; the judge prefers sample 0, rm-1 agrees, rm-0 not
        sid = f"b{i}"
        prompt[sid] = f"question {i}"
        add(f"{sid}g", sid, "bon", "gold", 0, "gold", scores=(1.0, 1.0, 2.0), lp=-1.0)
        add(f"{sid}a", sid, "bon", "adv", 0, "adv", scores=(1.5 - i, 0.0, 0.0), lp=-2.0)
        add(f"{sid}p0", sid, "bon", "policy", 0, "good", PM, scores=(0.0, 1.0, 1.0 + i), lp=-1.5)
        add(f"{sid}p1", sid, "bon", "policy", 1, "bad", PM, scores=(1.0, 0.0, 0.0), lp=-1.5)
        for ref in (RM0, RM1):
            seam_rows.append((sid, "bon", "adv", PM, ref, 0.1 * (i + 1), 0.1, float(i > 0), 1))
    for i in range(3):   # held-out pairs: rm-1 right on all, rm-0 on one
        sid = f"e{i}"
        add(f"{sid}g", sid, "eval", "gold", 0, "g", scores=(float(i == 0), 1.0, 1.0))
        add(f"{sid}a", sid, "eval", "adv", 0, "a", scores=(0.5, 0.0, 0.0))
    for i in range(4):   # pool with SEAM (primary PM, middle RM = rm-1)
        sid = f"p{i}"
        prompt[sid] = f"pool {i}"
        add(f"{sid}g", sid, "pool", "gold", 0, f"pg{i}", scores=(0, 1.0, 0), lp=-1.0)
        add(f"{sid}a", sid, "pool", "adv", 0, f"pa{i}", scores=(0, 2.0 if i % 2 else 0.0, 0), lp=-1.0)
        seam_rows.append((sid, "pool", "adv", PM, RM1, 0.2 * i, 0.1, float(i % 2), 1))
    models = {PM: {"role": "policy", "label": "pm"}, RM0: {"role": "reward", "label": "rm-0"},
              RM1: {"role": "reward", "label": "rm-1"}, J: {"role": "judge", "label": "judge"}}
    return build(policies=[PM], rewards=[RM0, RM1], judge=J, models=models, prompt=prompt, resp=resp, rm=rm, pm=pm,
                 seam_rows=seam_rows, heldout={"chatterbot_heldout": "eval"}, bon_dataset="bon", pool_dataset="pool",
                 train_pairs=[("q", "good", "bad")] * 3)


CFG = ExperimentConfig(policies=[PM], rm_sizes=[0, 1], policy_samples=2, variants=["adv"], k=1, n_resamples=50,
                       seeds=1, selection_q=[0.5], aug_base_pairs=2, aug_pairs=2)


def test_data_indexes_the_three_prompts():
    d = _data()
    assert d.bon_ids == ["b0", "b1", "b2"] and d.seam_rm == RM1 and d.pm_order == [PM]
    assert d.by_sample["b1"].policy[PM] == ["b1p0", "b1p1"], d.by_sample["b1"]


def test_model_quality():
    t = model_quality.compute(_data(), CFG)
    acc = {r["model"]: (r["value"], r["n"]) for r in t["model_quality"] if r["metric"] == "acc:chatterbot_heldout"}
    assert acc[RM1] == (1.0, 3) and acc[RM0][1] == 3 and math.isclose(acc[RM0][0], 1 / 3), acc
    jm = [r for r in t["model_quality"] if r["metric"] == "judge_mean"][0]
    assert math.isclose(jm["value"], np.mean([(1 + i) / 2 for i in range(3)])) and jm["n"] == 3, jm
    assert {r["pair_kind"] for r in t["mismatch_rates"]} == {"dataset:chatterbot_heldout"}


def test_saturation():
    t = saturation.compute(_data(), CFG)
    grid = {r["reward"]: r for r in t["saturation_grid"]}
    # rm-1 picks the judge's favourite (quality = oracle), rm-0 the other sample (quality 0)
    assert math.isclose(grid[RM1]["quality"], 2.0) and grid[RM1]["regret"] == 0, grid[RM1]
    assert grid[RM0]["quality"] == 0 and grid[RM0]["win_rate"] == 0 and grid[RM0]["n"] == 3, grid[RM0]
    assert len(t["saturation_curve"]) == 2 * 2 and len(t["saturation_picks"]) == 2 * 3
    assert {r["axis"] for r in t["saturation_summary"]} == {"reward", "policy"}


def test_mismatch():
    rows = {r["reward"]: r for r in mismatch.compute(_data(), CFG)["mismatch_rates"]}
    assert (rows[RM0]["k"], rows[RM0]["n"], rows[RM0]["rate"]) == (3, 3, 1.0), rows[RM0]
    assert (rows[RM1]["k"], rows[RM1]["n"]) == (0, 3) and rows[RM1]["rm_accuracy"] == 1.0, rows[RM1]


def test_seam_validation():
    t = seam_validation.compute(_data(), CFG)
    preds = {r["predictor"] for r in t["seam_validation"]}
    assert {"seam:adv", "seam:mean", "baseline:length", "baseline:rm_margin"} <= preds, preds
    pooled = [r for r in t["seam_validation"] if r["policy"] == "all" and r["predictor"] == "seam:adv"
              and r["stat"] == "auroc"][0]
    assert pooled["n"] == 6 and pooled["positives"] == 3, pooled
    assert len(t["seam_validation_items"]) == 2 * 3 * len({r["predictor"] for r in t["seam_validation"]})


def _retrain_by_length(pairs, seed, tag):
    """A deterministic stand-in RM: longer texts score higher, shifted by the training-set size."""
    d = _data()
    return lambda rid: len(d.resp[rid]["text"]) + 0.01 * len(pairs)


def test_selection_and_augmentation():
    d = _data()
    p = pool(d, CFG)
    assert p.ids == ["p0", "p1", "p2", "p3"] and [len(x) for x in p.pairs] == [1, 1, 1, 1], p
    assert set(retrain_ids(d, CFG)) >= {"b0p0", "e0g", "e0a"}
    sel = selection.compute(d, CFG, _retrain_by_length)["selection_results"]
    assert {r["condition"] for r in sel} == {"none", "drop_top", "drop_bottom", "drop_random"}
    top = [r for r in sel if r["condition"] == "drop_top" and r["seed"] is None and r["metric"] == "acc:chatterbot_heldout"][0]
    assert top["kept_samples"] == 2 and top["delta"] == 0, top   # the stand-in RM ignores what it is trained on
    aug = augmentation.compute(d, CFG, _retrain_by_length)["augmentation_results"]
    seam_row = [r for r in aug if r["condition"] == "seam" and r["seed"] is None and r["metric"] == "seam_heldout"][0]
    assert seam_row["train_pairs"] == 4 and seam_row["vs_random"] is not None, seam_row


@pytest.mark.parametrize("mod", [selection, augmentation])
def test_retraining_analyses_skip_without_pool(mod):
    d = _data()
    empty = build(policies=d.policies, rewards=d.rewards, judge=d.judge, models=d.models, prompt=d.prompt,
                  resp={k: v for k, v in d.resp.items() if v["dataset"] != "pool"}, rm=d.rm, pm=d.pm,
                  seam_rows=[r for r in d.seam_rows if r[1] != "pool"], heldout=d.heldout, bon_dataset="bon",
                  pool_dataset="pool")
    out = mod.compute(empty, CFG, _retrain_by_length)
    assert out["notes"] and "skipped" in out["notes"][0], out
