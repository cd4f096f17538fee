"""Saturation of the pre-registered study (analysis/study/bon_eval.py) on a hand-built 3-prompt dataset:
a picker equal to the judge must gain from best-of-N, one independent of it must not; the TOST wording
on hand-made intervals; and bon_curve's closed form against the enumeration of every subset."""

import math
from itertools import combinations

import numpy as np
import pytest

from analysis.stats import estimators as E
from analysis.study import bon_eval
from analysis.study.evidence_data import RM
from analysis.study.prereg_config import HumanStudyConfig

PM = "pm"
CFG = HumanStudyConfig(split_a=10, split_b=1, split_c=3, grid_sizes=[0, 10], grid_seeds=2, acq_start=1, acq_add=1,
                       n_resamples=300, bon_n=16, bon_prompts=3)
# judge scores of 16 samples for 3 prompts (distinct, different spreads)
JUDGE = np.stack([np.linspace(-1, 1, 16), np.linspace(0, 3, 16)[::-1], np.cos(np.arange(16))])


def _data(size0, size10):
    """Pickers of size 0 and 10 (two seeds each), scores built from the judge by the given functions."""
    rms = [RM(f"rm-{s}-s{k}", s, k) for s in (0, 10) for k in (0, 1)]
    picker = {r.ref: (size0 if r.size == 0 else size10)(r.seed) for r in rms}
    return bon_eval.BoNData(mode="human", policies=[PM], prompts=["c0", "c1", "c2"], rms=rms,
                            picker={PM: picker}, judge={PM: JUDGE})


def _independent(seed):
    """Seeded Gaussian rewards that carry no information about the judge (fixed seeds: deterministic)."""
    return np.random.default_rng(100 + seed).normal(size=JUDGE.shape)


def test_levels_and_quarter():
    assert bon_eval.levels(16) == [1, 2, 4, 8, 16] and bon_eval.quarter(16) == 4, bon_eval.levels(16)
    assert bon_eval.levels(12) == [1, 2, 4, 8, 12] and bon_eval.quarter(12) == 2, bon_eval.levels(12)


def test_picker_equal_to_judge_improves_monotonically():
    tabs = bon_eval.compute(_data(_independent, lambda seed: JUDGE.copy()), CFG)
    curve = [r for r in tabs["study_saturation"] if r["rm_size"] == 10]
    q = [r["quality"] for r in sorted(curve, key=lambda r: r["bon_n"])]
    assert [r["bon_n"] for r in sorted(curve, key=lambda r: r["bon_n"])] == [1, 2, 4, 8, 16], curve
    assert all(b >= a - 1e-12 for a, b in zip(q, q[1:])), f"quality must not fall with N for an oracle picker: {q}"
    top = max(curve, key=lambda r: r["bon_n"])
    assert top["gain"] > 0.5 and top["gain_lo"] > 0, f"oracle best-of-16 gain {top['gain']} [{top['gain_lo']}, ...]"
    assert top["quality"] == pytest.approx(JUDGE.max(axis=1).mean()), "best-of-16 by the judge = the best sample"
    assert top["n"] == 3 and top["n_seeds"] == 2 and "no human labels" in top["note"], top
    first = min(curve, key=lambda r: r["bon_n"])
    assert first["quality"] == pytest.approx(JUDGE.mean()) and first["gain"] == 0, first


def test_picker_independent_of_the_judge_gains_about_nothing():
    tabs = bon_eval.compute(_data(_independent, lambda seed: JUDGE.copy()), CFG)
    rnd = {r["bon_n"]: r for r in tabs["study_saturation"] if r["rm_size"] == 0}
    oracle_gain = JUDGE.max(axis=1).mean() - JUDGE.mean()
    g = rnd[16]["gain"]
    assert abs(g) < 0.5 * oracle_gain, f"an uninformative picker gained {g} of a possible {oracle_gain}"
    # size test: the informed size beats the uninformed one at N = 16
    size = [t for t in tabs["study_saturation_test"] if t["comparison"] == "RM size 10 vs 0"][0]
    assert size["delta"] > 0 and size["conclusion"] == "still improving", size


def test_same_picker_at_every_n_is_saturated_by_tost():
    """A picker whose reward is constant picks at random at every N: delta N 16 vs 4 is exactly 0, the
    interval collapses to 0, so TOST concludes 'saturated'."""
    tabs = bon_eval.compute(_data(lambda s: np.zeros_like(JUDGE), lambda s: np.zeros_like(JUDGE)), CFG)
    tests = {(t["comparison"], t["rm_size"]): t for t in tabs["study_saturation_test"]}
    t = tests[("N 16 vs 4", 10)]
    assert t["delta"] == 0 and t["conclusion"].startswith("saturated"), t
    sd = JUDGE.std(ddof=1)
    assert t["judge_sd"] == pytest.approx(sd) and t["margin"] == pytest.approx(0.1 * sd) and t["margin_sd"] == 0.1, t


@pytest.mark.parametrize("ci, want", [
    ((0.01, 0.3, 0.02, 0.25), "still improving"),           # lower 95% end > 0
    ((-0.3, -0.01, -0.25, -0.02), "declining (over-optimisation)"),
    ((-0.04, 0.04, -0.03, 0.03), "saturated (equivalent within ±margin)"),   # 90% inside +-0.05
    ((-0.08, 0.04, -0.06, 0.03), "inconclusive"),           # 90% crosses -0.05
    ((-0.2, 0.3, -0.15, 0.25), "inconclusive"),
    ((math.nan, 0.1, 0.0, 0.1), "inconclusive (no data)"),
])
def test_tost_wording(ci, want):
    got = bon_eval.conclusion(*ci, margin=0.05)
    assert got == want, f"{ci} with margin 0.05 gave {got!r}, want {want!r}"


def test_verdict_names_the_judge_and_the_missing_human_labels():
    tabs = bon_eval.compute(_data(_independent, lambda seed: JUDGE.copy()), CFG)
    text = bon_eval.verdict(tabs["study_saturation_test"])
    assert "held out from the grid" in text and "no human labels" in text and "N 16 vs 4 (rm-10)" in text, text
    assert bon_eval.verdict([]) == "Saturation: not measured."


def test_bon_curve_closed_form_equals_subset_enumeration():
    """The closed form of E.bon_curve against averaging the tie-averaged pick over every n-subset."""
    rng = np.random.default_rng(7)
    rewards = [rng.integers(0, 3, 7).astype(float), rng.normal(size=6), np.array([1.0, np.nan, 1.0, 0.0])]
    gold = [rng.normal(size=len(r)) for r in rewards]
    ns = [1, 2, 3, 5, 6, 7, 8]
    got = E.bon_curve(rewards, gold, ns)
    for i, (r, g) in enumerate(zip(rewards, gold)):
        ok = ~np.isnan(r)
        r, g = r[ok], g[ok]
        for j, n in enumerate(ns):
            if n > len(r):
                assert math.isnan(got[i, j]), (i, n, got[i, j])
                continue
            want = np.mean([E.bon_pick_weights(r[list(c)]) @ g[list(c)] for c in combinations(range(len(r)), n)])
            assert got[i, j] == pytest.approx(want), f"prompt {i}, n={n}: closed form {got[i, j]} vs {want}"


def test_config_validates_bon_n():
    with pytest.raises(ValueError, match="bon_n >= 2"):
        HumanStudyConfig(split_a=10, split_b=1, split_c=3, grid_sizes=[0, 10], acq_start=1, acq_add=1, bon_n=1)
    assert HumanStudyConfig.QUICK["bon_prompts"] == 8 and "bon_n" not in HumanStudyConfig.QUICK


@pytest.fixture(scope="module")
def db(synthetic_db, tmp_path_factory):
    """A results DB holding a human-mode study with the saturation tables of the hand-built dataset."""
    import shutil

    from analysis.storage import experiment_store

    path = tmp_path_factory.mktemp("bon") / "seam.duckdb"
    shutil.copy(synthetic_db(60, seed=5), path)
    tabs = bon_eval.compute(_data(_independent, lambda seed: JUDGE.copy()), CFG)
    res = {t: [dict(run_id="r1", **r) for r in rows] for t, rows in tabs.items()}
    res["study_verdict"] = [dict(run_id="r1", mode="human", headline=True, verdict="Verdict text.")]
    res["study_design"] = [dict(run_id="r1", mode="human", design={"splits": {"sizes": {"C": 3}}})]
    experiment_store.write_evidence(path, res)
    return path


def test_evidence_page_shows_the_saturation_curve_and_tests(run_app, find_frame):
    import base64
    import json

    at = run_app("evidence")
    heads = [h.value for h in at.subheader]
    assert "Saturation: best-of-N up to N = 16" in heads, heads
    captions = " ".join(c.value for c in at.caption)
    assert "held out from the grid" in captions and "no human labels exist" in captions, captions
    tests = find_frame(at, "comparison", "delta", "lo90", "hi90", "margin", "margin_sd", "conclusion")
    size = tests[tests["comparison"] == "RM size 10 vs 0"].iloc[0]
    assert size["conclusion"] == "still improving" and size["n"] == 3, tests
    figs = [json.loads(p.proto.spec) for p in at.get("plotly_chart")]
    sat = [f for f in figs if "judge score of the pick" in json.dumps(f["layout"])]
    assert sat, "no best-of-N figure on the page"
    traces = sat[0]["data"]
    x = traces[0]["x"]
    x = np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]).tolist() if isinstance(x, dict) else x
    assert sorted({t["name"] for t in traces}) == ["rm-0", "rm-10"] and x == [1, 2, 4, 8, 16], (x, traces)
    assert sat[0]["layout"]["xaxis"]["type"] == "log", sat[0]["layout"]["xaxis"]
