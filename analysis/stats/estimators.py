"""Pure estimators for the paper-in-miniature experiments (`seam experiment`, analysis/study/).

Nothing here does I/O or loads a model; every function takes plain arrays so the tests can feed
hand-made data. Proportions use `metrics.wilson`, means `metrics.bootstrap_mean` (percentile bootstrap);
the rest is scipy / scikit-learn.

Conventions
- A *prompt* has N >= 1 PM samples. `rewards[i]` / `gold[i]` are 1-D arrays over the samples of prompt
  i (ragged: prompts may have different N), the RM's reward and the gold judge's score of each sample.
- Best-of-N: the RM picks its highest-reward sample; ties between samples the RM cannot tell apart are
  resolved by averaging over them (the expectation of a uniform random tie-break), never by position.
- Intervals are 95% unless told otherwise and are returned as (estimate, lo, hi).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np
from scipy import stats

from analysis.stats.metrics import PairOutcomes, bootstrap_mean, degenerate_mean, pair_outcomes, t_interval, wilson

__all__ = [
    "BoNOutcome", "bon_pick_weights", "best_of_n", "bon_curve", "paired_diff", "mean_ci", "seed_mean_ci",
    "auroc", "spearman", "SaturationResult", "saturation_point", "pairwise_agreement", "drop_mask",
    "accuracy_items", "wilson", "bootstrap_mean",
]


# ---------------------------------------------------------------------------------------------- best-of-N

def bon_pick_weights(rewards: Sequence[float]) -> np.ndarray:
    """Weight of each sample in the RM's best-of-N pick: 1/t on the t samples tied at the maximum reward,
    0 elsewhere (NaN rewards never win). All-NaN input gives all zeros."""
    r = np.asarray(rewards, dtype=float)
    w = np.zeros(len(r))
    ok = ~np.isnan(r)
    if not ok.any():
        return w
    top = r == np.nanmax(r)
    w[top & ok] = 1.0 / (top & ok).sum()
    return w


@dataclass(frozen=True)
class BoNOutcome:
    """Per-prompt best-of-N outcomes (arrays aligned with the prompts passed to `best_of_n`)."""
    pick: np.ndarray      # gold score of the RM's pick (tie-averaged)
    random: np.ndarray    # expected gold score of one random sample = the N = 1 baseline
    oracle: np.ndarray    # gold score of the best sample (the judge picks itself)
    win: np.ndarray       # P(gold(pick) > gold(other sample)) over the other samples, ties count 1/2
    n_samples: np.ndarray

    @property
    def gain(self) -> np.ndarray:
        """Gain of best-of-N over N = 1, per prompt."""
        return self.pick - self.random

    @property
    def regret(self) -> np.ndarray:
        """How far the RM's pick is below the best sample (0 = the RM found the judge's favourite)."""
        return self.oracle - self.pick


def best_of_n(rewards: Sequence[Sequence[float]], gold: Sequence[Sequence[float]]) -> BoNOutcome:
    """Best-of-N per prompt: the RM picks among the prompt's samples, the gold judge scores the pick."""
    if len(rewards) != len(gold):
        raise ValueError(f"{len(rewards)} reward rows but {len(gold)} gold rows")
    pick, rand, orac, win, ns = [], [], [], [], []
    for r, g in zip(rewards, gold):
        r, g = np.asarray(r, float), np.asarray(g, float)
        if r.shape != g.shape:
            raise ValueError(f"rewards {r.shape} and gold {g.shape} differ for a prompt")
        ok = ~(np.isnan(r) | np.isnan(g))
        r, g = r[ok], g[ok]
        if len(r) == 0:
            pick.append(np.nan), rand.append(np.nan), orac.append(np.nan), win.append(np.nan), ns.append(0)
            continue
        w = bon_pick_weights(r)
        pick.append(float(w @ g))
        rand.append(float(g.mean()))
        orac.append(float(g.max()))
        ns.append(len(g))
        if len(g) == 1:
            win.append(0.5)
            continue
        # P(win) of the (tie-averaged) pick against a uniformly drawn *other* sample.
        total = 0.0
        for i in np.nonzero(w)[0]:
            others = np.delete(g, i)
            total += w[i] * float(np.mean((g[i] > others) + 0.5 * (g[i] == others)))
        win.append(total)
    return BoNOutcome(np.asarray(pick), np.asarray(rand), np.asarray(orac), np.asarray(win), np.asarray(ns))


def bon_curve(rewards: Sequence[Sequence[float]], gold: Sequence[Sequence[float]],
              ns: Sequence[int]) -> np.ndarray:
    """Expected gold score of best-of-n for each n in `ns`, per prompt: the average over *all* n-subsets
    of the prompt's samples (exact, no resampling noise). Shape [n_prompts, len(ns)]; NaN where a prompt
    has fewer than n samples. n = 1 equals `best_of_n(...).random`, n = N equals `.pick`.

    Closed form instead of enumerating subsets (C(16, 8) = 12,870 per prompt and RM made best-of-16 too
    slow): group the samples by equal reward, best group first. A random n-subset's pick lies in group G
    when it avoids the h samples of better groups and meets G (m samples): probability
    [C(N-h, n) - C(N-h-m, n)] / C(N, n). Given that, the tie-averaged pick is the mean gold score of a
    random non-empty part of G, whose expectation is G's mean gold score (exchangeability)."""
    from math import comb

    out = np.full((len(rewards), len(ns)), np.nan)
    for i, (r, g) in enumerate(zip(rewards, gold)):
        r, g = np.asarray(r, float), np.asarray(g, float)
        ok = ~(np.isnan(r) | np.isnan(g))
        r, g = r[ok], g[ok]
        N = len(r)
        if N == 0:
            continue
        levels, inverse = np.unique(-r, return_inverse=True)          # best reward first
        sizes = np.bincount(inverse, minlength=len(levels))
        means = np.bincount(inverse, weights=g, minlength=len(levels)) / sizes
        above = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for j, n in enumerate(ns):
            if n < 1 or n > N:
                continue
            p = [(comb(N - h, n) - comb(N - h - m, n)) / comb(N, n) for h, m in zip(above, sizes)]
            out[i, j] = float(np.dot(p, means))
    return out


# ---------------------------------------------------------------------------------------------- intervals

def mean_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000,
            seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap over items (NaNs dropped); `metrics.bootstrap_mean`."""
    return bootstrap_mean(values, confidence=confidence, n_resamples=n_resamples, seed=seed)


def paired_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000,
                seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over items measured under both conditions, with a paired bootstrap interval
    (resampling items, so per-item difficulty cancels). Items with a NaN on either side are dropped."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_mean(a - b, confidence=confidence, n_resamples=n_resamples, seed=seed)


def seed_mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean over independent repetitions (seeds) with a Student-t interval; one value gives (v, v, v)."""
    v, m = degenerate_mean(values)
    if v is None:
        return m, m, m
    lo, hi = t_interval(m, float(v.std(ddof=1)), len(v), confidence)
    return m, lo, hi


def _percentile(samples: list[float], confidence: float) -> tuple[float, float]:
    if not samples:
        return float("nan"), float("nan")
    lo, hi = np.percentile(samples, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Ranked:
    """A rank statistic with its bootstrap interval and sample size."""
    value: float
    lo: float
    hi: float
    n: int
    positives: int | None = None   # AUROC only: items with label 1
    p_value: float | None = None   # Spearman only


def _auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mann–Whitney AUROC for each row of [B, n_pos] positive and [B, n_neg] negative scores (ties 1/2)."""
    both = np.concatenate([pos, neg], axis=1)
    ranks = stats.rankdata(both, axis=1)               # average ranks: a tie counts 1/2
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    return (ranks[:, :n_pos].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auroc(scores: Sequence[float], labels: Sequence[int | bool], confidence: float = 0.95,
          n_resamples: int = 1000, seed: int = 0) -> Ranked:
    """Area under the ROC curve of `scores` for binary `labels` (higher score = predicts label 1).

    Ties in the scores get half credit (the Mann–Whitney U statistic, equal to scikit-learn's
    `roc_auc_score`), so a constant predictor scores exactly 0.5. Interval: stratified percentile
    bootstrap (positives and negatives resampled separately, so every resample has both classes),
    vectorised over resamples. NaN when a class is empty; NaN scores are dropped.
    """
    s, y = np.asarray(scores, float), np.asarray(labels).astype(bool)
    ok = ~np.isnan(s)
    s, y = s[ok], y[ok]
    n, npos = len(s), int(y.sum())
    if npos == 0 or npos == n:
        return Ranked(float("nan"), float("nan"), float("nan"), n, npos)
    pos, neg = s[y], s[~y]
    value = float(_auc_rows(pos[None, :], neg[None, :])[0])
    rng = np.random.default_rng(seed)
    boots = []
    for start in range(0, n_resamples, 250):          # chunks bound memory for large n
        b = min(250, n_resamples - start)
        bp = pos[rng.integers(0, len(pos), (b, len(pos)))]
        bn = neg[rng.integers(0, len(neg), (b, len(neg)))]
        boots.extend(_auc_rows(bp, bn).tolist())
    lo, hi = _percentile(boots, confidence)
    return Ranked(value, lo, hi, n, npos)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1), np.nan)


def spearman(x: Sequence[float], y: Sequence[float], confidence: float = 0.95, n_resamples: int = 1000,
             seed: int = 0) -> Ranked:
    """Spearman rank correlation (scipy, ties get average ranks) with a paired percentile bootstrap
    interval (vectorised; resamples where a side is constant are skipped); NaN when either side is
    constant. Pairs with a NaN are dropped. With n <= EXACT_MAX_N the p-value is the exact permutation
    p-value (all n! pairings, two-sided): the t approximation, and a bootstrap over so few items, are
    meaningless there (4 cells ranked alike give a bootstrap interval [1, 1], but p = 2/24)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return Ranked(float("nan"), float("nan"), float("nan"), n)
    res = stats.spearmanr(x, y)
    rng = np.random.default_rng(seed)
    boots: list[float] = []
    for start in range(0, n_resamples, 250):
        b = min(250, n_resamples - start)
        idx = rng.integers(0, n, (b, n))
        r = _pearson_rows(stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1))
        boots.extend(r[~np.isnan(r)].tolist())
    lo, hi = _percentile(boots, confidence)
    p = float(res.pvalue)
    if n <= EXACT_MAX_N:
        p = float(stats.permutation_test((x,), lambda xs: stats.spearmanr(xs, y).statistic,
                                         permutation_type="pairings", n_resamples=np.inf).pvalue)
    return Ranked(float(res.statistic), lo, hi, n, p_value=p)


#: Up to this many items `spearman` enumerates every pairing for an exact p-value (8! = 40,320).
EXACT_MAX_N = 8


# ---------------------------------------------------------------------------------------------- saturation

@dataclass(frozen=True)
class SaturationResult:
    """Where quality stops improving along one axis (levels ordered weak -> strong).

    `index`: the first level that no stronger level beats significantly (paired bootstrap lower bound of
    the mean per-prompt difference > `min_gain`). `saturated` is True when that level is not the last
    one, i.e. the strongest levels add nothing measurable; False means quality was still improving at
    the top of the grid. A flat axis saturates at level 0.
    `steps`: (mean, lo, hi) of level j+1 minus level j; `vs_index`: the best later level minus `index`.
    """
    index: int
    saturated: bool
    steps: list[tuple[float, float, float]]
    vs_index: tuple[float, float, float] | None


def saturation_point(per_prompt: np.ndarray, min_gain: float = 0.0, confidence: float = 0.95,
                     n_resamples: int = 2000, seed: int = 0) -> SaturationResult:
    """Saturation along one axis from per-prompt quality `per_prompt[level, prompt]` (the same prompts at
    every level, e.g. best-of-N gold scores of one PM under RMs of increasing quality)."""
    q = np.asarray(per_prompt, float)
    if q.ndim != 2 or q.shape[0] < 1:
        raise ValueError("per_prompt must be [levels, prompts]")
    L = q.shape[0]
    steps = [paired_diff(q[j + 1], q[j], confidence, n_resamples, seed) for j in range(L - 1)]
    index = L - 1
    for j in range(L):
        better = [paired_diff(q[jj], q[j], confidence, n_resamples, seed) for jj in range(j + 1, L)]
        if not any(lo > min_gain for _, lo, _ in better):
            index = j
            break
    vs = None
    if index < L - 1:
        later = [paired_diff(q[jj], q[index], confidence, n_resamples, seed) for jj in range(index + 1, L)]
        vs = max(later, key=lambda t: t[0])
    return SaturationResult(index, index < L - 1, steps, vs)


# ---------------------------------------------------------------------------------------------- mismatch

def pairwise_agreement(rewards: Sequence[float], gold: Sequence[float]) -> tuple[PairOutcomes, int]:
    """RM vs gold judge on all pairs of one prompt's samples: (outcomes, judge_ties).

    Each pair's reference preference is the judge's (the higher gold score wins); pairs the judge scores
    equal have no reference and are counted in `judge_ties`, not in the outcomes. RM ties are outcomes
    of kind `ties` (reported, not hidden), as in `metrics.pair_outcomes`.
    """
    r, g = np.asarray(rewards, float), np.asarray(gold, float)
    pref, other, judge_ties = [], [], 0
    for i, j in combinations(range(len(r)), 2):
        if np.isnan(g[i]) or np.isnan(g[j]) or np.isnan(r[i]) or np.isnan(r[j]):
            continue
        if g[i] == g[j]:
            judge_ties += 1
            continue
        a, b = (i, j) if g[i] > g[j] else (j, i)
        pref.append(r[a]), other.append(r[b])
    return pair_outcomes(pref, other), judge_ties


# ---------------------------------------------------------------------------------------------- selection

def drop_mask(scores: Sequence[float], q: float, how: str = "top", seed: int = 0) -> np.ndarray:
    """Boolean *keep* mask that drops round(q * n) items: the highest scores (`top`), the lowest
    (`bottom`) or a seeded uniform random subset (`random`, the control). Ties in the scores are broken
    by position (stable sort), so the result is deterministic."""
    s = np.asarray(scores, float)
    n = len(s)
    if not 0 <= q <= 1:
        raise ValueError("q must be in [0, 1]")
    m = int(round(q * n))
    keep = np.ones(n, bool)
    if m == 0:
        return keep
    if how == "top":
        order = np.argsort(-np.nan_to_num(s, nan=-np.inf), kind="stable")
    elif how == "bottom":
        order = np.argsort(np.nan_to_num(s, nan=np.inf), kind="stable")
    elif how == "random":
        order = np.random.default_rng(seed).permutation(n)
    else:
        raise ValueError(f"how must be top, bottom or random, not {how!r}")
    keep[order[:m]] = False
    return keep


def accuracy_items(r_preferred: Sequence[float], r_other: Sequence[float]) -> np.ndarray:
    """Per-pair correctness (1 right, 0 wrong, 0.5 tie) — for paired bootstraps of accuracy differences."""
    d = np.asarray(r_preferred, float) - np.asarray(r_other, float)
    return np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
