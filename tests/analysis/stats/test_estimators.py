"""Estimators of the paper-in-miniature experiments, on hand-made data (fast: no models)."""

import itertools
import math

import numpy as np
import pytest

from analysis.stats import estimators as E
from analysis.stats.metrics import wilson


# ------------------------------------------------------------------ best-of-N

def test_bon_pick_weights_ties_and_nan():
    assert E.bon_pick_weights([0.1, 0.9, 0.3]).tolist() == [0, 1, 0]
    assert E.bon_pick_weights([2.0, 1.0, 2.0]).tolist() == [0.5, 0, 0.5]
    assert E.bon_pick_weights([np.nan, 1.0]).tolist() == [0, 1]
    assert E.bon_pick_weights([np.nan, np.nan]).tolist() == [0, 0]


def test_best_of_n_by_hand():
    rewards = [[0.0, 1.0, 0.5], [3.0, 3.0, 1.0], [5.0]]
    gold = [[1.0, 2.0, 3.0], [0.0, 4.0, 1.0], [7.0]]
    out = E.best_of_n(rewards, gold)
    # prompt 0: RM picks sample 1 (gold 2); random = 2; oracle 3; beats 1 of the 2 others
    # prompt 1: RM tie between samples 0 and 1 -> expected gold (0 + 4) / 2 = 2
    # prompt 2: a single sample
    assert out.pick.tolist() == [2.0, 2.0, 7.0]
    assert out.random.tolist() == pytest.approx([2.0, 5 / 3, 7.0])
    assert out.oracle.tolist() == [3.0, 4.0, 7.0]
    assert out.gain.tolist() == pytest.approx([0.0, 1 / 3, 0.0])
    assert out.regret.tolist() == [1.0, 2.0, 0.0]
    # win: prompt 0 -> 1/2; prompt 1 -> 0.5 * (0 beats none of [4, 1]) + 0.5 * (4 beats both) = 0.5
    assert out.win.tolist() == pytest.approx([0.5, 0.5, 0.5])
    assert out.n_samples.tolist() == [3, 3, 1]


def test_best_of_n_perfect_and_adversarial_rm():
    rng = np.random.default_rng(0)
    gold = rng.normal(size=(50, 4))
    perfect = E.best_of_n(gold, gold)
    inverse = E.best_of_n(-gold, gold)
    assert np.allclose(perfect.regret, 0) and np.allclose(perfect.win, 1)
    assert np.allclose(inverse.win, 0) and (inverse.gain < 0).all()


def test_best_of_n_shape_mismatch():
    with pytest.raises(ValueError):
        E.best_of_n([[1, 2]], [[1, 2, 3]])


def test_bon_curve_endpoints_and_monotone_for_good_rm():
    rng = np.random.default_rng(1)
    gold = rng.normal(size=(30, 4))
    rewards = gold + 0.3 * rng.normal(size=gold.shape)   # a decent RM
    curve = E.bon_curve(rewards, gold, [1, 2, 3, 4])
    bon = E.best_of_n(rewards, gold)
    assert np.allclose(curve[:, 0], bon.random)
    assert np.allclose(curve[:, 3], bon.pick)
    means = curve.mean(axis=0)
    assert all(a < b for a, b in zip(means, means[1:]))
    # n larger than a prompt's sample count -> NaN
    assert np.isnan(E.bon_curve([[1.0, 2.0]], [[1.0, 2.0]], [3])[0, 0])


# ------------------------------------------------------------------ intervals

def test_mean_and_paired_diff_intervals():
    rng = np.random.default_rng(2)
    a = rng.normal(1.0, 1.0, 400)
    m, lo, hi = E.mean_ci(a)
    assert lo < m < hi and lo < 1.0 < hi
    b = a - 0.2 + rng.normal(0, 0.05, 400)      # b tracks a closely: paired diff is tight
    d, dlo, dhi = E.paired_diff(a, b)
    assert d == pytest.approx(0.2, abs=0.02) and 0.15 < dlo < d < dhi < 0.25
    assert E.mean_ci([3.0, 3.0]) == (3.0, 3.0, 3.0)
    assert all(math.isnan(v) for v in E.mean_ci([]))
    with pytest.raises(ValueError):
        E.paired_diff([1, 2], [1])


def test_seed_mean_ci_t_interval():
    m, lo, hi = E.seed_mean_ci([0.6, 0.7, 0.8])
    assert m == pytest.approx(0.7)
    # t(0.975, 2) * 0.1 / sqrt(3) = 0.2484
    assert hi - m == pytest.approx(0.2484, abs=1e-3) and m - lo == pytest.approx(hi - m)
    assert E.seed_mean_ci([0.5]) == (0.5, 0.5, 0.5)


def test_wilson_via_metrics():
    p = wilson(35, 100)
    assert p.p == pytest.approx(0.35) and p.lo == pytest.approx(0.2636, abs=1e-3) and p.hi == pytest.approx(0.4475, abs=1e-3)
    assert wilson(0, 10).lo == 0.0 and wilson(10, 10).hi == pytest.approx(1.0)


# ------------------------------------------------------------------ AUROC / Spearman

def test_auroc_perfect_chance_and_ties():
    y = [0, 0, 1, 1]
    assert E.auroc([0.1, 0.2, 0.8, 0.9], y).value == 1.0
    assert E.auroc([0.9, 0.8, 0.2, 0.1], y).value == 0.0
    # all tied -> exactly 0.5 (ties get half credit)
    r = E.auroc([1, 1, 1, 1], y)
    assert r.value == 0.5 and r.positives == 2 and r.n == 4
    # one tie across classes: pairs (pos, neg): (0.5 vs 0.2) win, (0.5 vs 0.5) half, (0.9 vs both) wins -> 3.5 / 4
    assert E.auroc([0.2, 0.5, 0.5, 0.9], y).value == pytest.approx(0.875)
    # a single class: undefined
    assert math.isnan(E.auroc([0.1, 0.2], [1, 1]).value)


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 120)
    s = np.round(y * 0.5 + rng.normal(0, 1, 120), 1)     # rounding makes many ties
    assert E.auroc(s, y, n_resamples=10).value == pytest.approx(roc_auc_score(y, s))


def test_auroc_interval_contains_estimate():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = y + rng.normal(0, 1.0, 300)
    r = E.auroc(s, y)
    assert 0.6 < r.value < 0.9 and r.lo < r.value < r.hi
    nan_scores = np.r_[s[:-1], np.nan]
    assert E.auroc(nan_scores, y).n == 299


def test_spearman_matches_scipy_and_interval():
    from scipy import stats

    rng = np.random.default_rng(4)
    x = rng.normal(size=200)
    y = x + rng.normal(size=200)
    r = E.spearman(x, y)
    assert r.value == pytest.approx(stats.spearmanr(x, y).statistic)
    assert r.lo < r.value < r.hi and r.p_value < 1e-6
    assert math.isnan(E.spearman([1, 1, 1, 1], [1, 2, 3, 4]).value)


def test_spearman_small_n_gets_the_exact_permutation_p_value():
    """4 cells ranked identically: of the 24 orderings, 2 reach |rho| = 1, so p = 1/12 exactly (the t
    approximation says ~0, and the bootstrap interval collapses to [1, 1])."""
    r = E.spearman([0.1, 0.2, 0.3, 0.4], [5, 6, 7, 8])
    assert r.value == pytest.approx(1.0) and r.p_value == pytest.approx(2 / 24), r
    r = E.spearman([1, 2, 3, 4, 5], [2, 1, 3, 4, 5])   # rho = 0.9: checked against all 120 pairings
    brute = np.mean([abs(stats_spearman([1, 2, 3, 4, 5], p)) >= 0.9 - 1e-12
                     for p in itertools.permutations([2, 1, 3, 4, 5])])
    assert r.p_value == pytest.approx(brute), (r.p_value, brute)


def stats_spearman(x, y) -> float:
    from scipy import stats
    return float(stats.spearmanr(x, y).statistic)


# ------------------------------------------------------------------ saturation

def test_saturation_point_detects_plateau():
    rng = np.random.default_rng(5)
    base = rng.normal(0, 1, 200)
    noise = lambda: rng.normal(0, 0.05, 200)  # noqa: E731
    # levels 0 -> 1 -> 2 improve clearly, then 3 and 4 add nothing
    q = np.stack([base, base + 0.5 + noise(), base + 1.0 + noise(), base + 1.0 + noise(), base + 1.0 + noise()])
    res = E.saturation_point(q)
    assert res.index == 2 and res.saturated
    assert res.steps[0][1] > 0 and res.steps[3][1] < 0 < res.steps[3][2]
    assert res.vs_index is not None and res.vs_index[1] <= 0


def test_saturation_point_still_improving_and_flat():
    rng = np.random.default_rng(6)
    base = rng.normal(0, 1, 200)
    rising = np.stack([base + 0.3 * j + rng.normal(0, 0.05, 200) for j in range(4)])
    res = E.saturation_point(rising)
    assert res.index == 3 and not res.saturated and res.vs_index is None
    flat = np.stack([base + rng.normal(0, 0.05, 200) for _ in range(3)])
    res = E.saturation_point(flat)
    assert res.index == 0 and res.saturated
    # a dip then recovery beyond the start: not saturated at the dip
    dip = np.stack([base, base - 0.5, base + 0.5])
    assert E.saturation_point(dip).index == 2


# ------------------------------------------------------------------ mismatch on PM samples

def test_pairwise_agreement():
    # judge order: s2 > s1 > s0; RM order: s1 > s2 > s0; one judge tie pair (s3 == s0)
    out, judge_ties = E.pairwise_agreement([0.0, 2.0, 1.0, 5.0], [0.0, 1.0, 2.0, 0.0])
    # pairs with a judge preference: (0,1) RM right, (0,2) right, (1,2) wrong, (1,3) wrong, (2,3) wrong
    assert judge_ties == 1
    assert (out.correct, out.wrong, out.ties) == (2, 3, 0)
    out, _ = E.pairwise_agreement([1.0, 1.0], [0.0, 1.0])
    assert out.ties == 1 and out.mismatch().n == 0


# ------------------------------------------------------------------ selection helpers

def test_drop_mask():
    s = [0.9, 0.1, 0.5, 0.7]
    assert E.drop_mask(s, 0.5, "top").tolist() == [False, True, True, False]
    assert E.drop_mask(s, 0.25, "bottom").tolist() == [True, False, True, True]
    r1, r2 = E.drop_mask(s, 0.5, "random", seed=1), E.drop_mask(s, 0.5, "random", seed=1)
    assert r1.tolist() == r2.tolist() and r1.sum() == 2
    assert E.drop_mask(s, 0.0).all()
    with pytest.raises(ValueError):
        E.drop_mask(s, 1.5)


def test_accuracy_items():
    assert E.accuracy_items([1, 0, 2], [0, 1, 2]).tolist() == [1.0, 0.0, 0.5]
