"""Pure metric functions: SEAM, hacking, rank agreement, mismatch and intervals.

SEAM itself is defined once, in SQL (analysis/storage/sql/metrics.sql: the stored table, the `seam_at`
macro and every dashboard query select from it), so the dashboard can aggregate millions of rows inside
DuckDB. `seam_sample` here is the independent Python oracle the parity tests compare that SQL against;
it follows the SQL semantics (non-finite log-probs dropped, k = finite worse responses). The interval
helpers (Wilson, Student t) are the ones every page and report uses. Nothing here does I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats


def length_penalized(logprob_sum: np.ndarray | float, n_tokens: np.ndarray | int, alpha: float = 1.0):
    """l_alpha(y) = l(y) / n(y)^alpha. alpha=1: mean token log-prob (length-neutral); alpha=0: raw sum."""
    return np.asarray(logprob_sum, dtype=float) / np.power(np.maximum(np.asarray(n_tokens, dtype=float), 1.0), alpha)


def hacking(r_worse: np.ndarray, r_gold: float, tau: float = 0.0) -> np.ndarray:
    """h_j = 1[r(y_j) > r(y*)] (tau = 0), or the soft form sigmoid((r(y_j) - r(y*)) / tau)."""
    diff = np.asarray(r_worse, dtype=float) - float(r_gold)
    if tau > 0:
        return 1.0 / (1.0 + np.exp(-diff / tau))
    return (diff > 0).astype(float)


@dataclass(frozen=True)
class SeamResult:
    seam: float            # (1/k) sum_j w(y_j) h_j, in [0, 1]; higher = less seamless
    seam_rel: float        # sum_j w h / sum_j w: PM-weighted hacking rate
    hack_rate: float       # (1/k) sum_j h_j
    k: int
    rank_agreement: float  # Kendall tau-b between l_alpha and r over {y*} U {y_j}
    pm_prefers_gold: bool  # l_alpha(y*) above every worse response
    rm_prefers_gold: bool  # r(y*) above every worse response


def seam_sample(lp_gold: float, n_gold: int, r_gold: float,
                lp_worse: Sequence[float], n_worse: Sequence[int], r_worse: Sequence[float],
                alpha: float = 1.0, tau: float = 0.0) -> SeamResult:
    """SEAM and friends for one sample from summed log-probs, token counts and rewards.

    A non-finite log-prob means the response was longer than the PM's max length (it was not scored):
    such worse responses are dropped and k counts the rest, as the SQL definition does. Raises
    ValueError when nothing is left to compare (non-finite gold, or no finite worse response); the SQL
    then has no row for the sample.
    """
    if not math.isfinite(float(lp_gold)):
        raise ValueError("SEAM needs a finite gold log-prob")
    keep = np.isfinite(np.asarray(lp_worse, dtype=float))
    lp_worse = np.asarray(lp_worse, dtype=float)[keep]
    n_worse = np.asarray(n_worse, dtype=float)[keep]
    r_worse = np.asarray(r_worse, dtype=float)[keep]
    lw = length_penalized(lp_worse, n_worse, alpha)
    lg = float(length_penalized(lp_gold, n_gold, alpha))
    w = np.exp(lw)
    h = hacking(r_worse, r_gold, tau)
    k = len(lw)
    if k == 0:
        raise ValueError("SEAM needs at least one worse response with a finite log-prob")
    wsum = float(w.sum())
    return SeamResult(
        seam=float((w * h).mean()),
        seam_rel=float((w * h).sum() / wsum) if wsum > 0 else float("nan"),
        hack_rate=float(h.mean()),
        k=k,
        rank_agreement=kendall_tau_b(np.r_[lg, lw], np.r_[r_gold, r_worse]),
        pm_prefers_gold=bool(np.all(lg > lw)),
        rm_prefers_gold=bool(np.all(r_gold > np.asarray(r_worse, dtype=float))),
    )


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall tau-b (ties-aware); nan when either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(stats.kendalltau(x, y, variant="b").statistic)


# ---------------------------------------------------------------- mismatch / accuracy


@dataclass(frozen=True)
class Proportion:
    k: int
    n: int
    lo: float
    hi: float

    @property
    def p(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def __str__(self) -> str:
        if not self.n:
            return "n/a (n = 0)"
        return f"{self.p:.1%} [{self.lo:.1%}, {self.hi:.1%}] (n = {self.n})"


Z95 = 1.959963984540054  # two-sided 95% normal quantile (= scipy.stats.norm.ppf(0.975))


def wilson_bounds(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval bounds of k/n (k may be fractional); (nan, nan) when n <= 0."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def wilson(k: int, n: int, confidence: float = 0.95) -> Proportion:
    """Wilson score interval for k successes out of n (robust near 0 and 1, unlike the normal one).

    The one Wilson API: reports and dashboard tables alike (counts are small and rates can sit near 0
    or 1, where the Wald interval collapses or leaves [0, 1])."""
    if n <= 0:
        return Proportion(0, 0, float("nan"), float("nan"))
    z = Z95 if confidence == 0.95 else float(stats.norm.ppf(0.5 + confidence / 2))
    lo, hi = wilson_bounds(k, n, z)
    return Proportion(k, n, lo, hi)


def t_interval(mean: float, sd: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a mean from (mean, sample sd, n); NaNs when n < 2."""
    if n is None or n < 2 or sd is None or math.isnan(sd):
        return (math.nan, math.nan)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


@dataclass(frozen=True)
class PairOutcomes:
    correct: int
    wrong: int
    ties: int

    @property
    def n(self) -> int:
        return self.correct + self.wrong + self.ties

    def mismatch(self, confidence: float = 0.95) -> Proportion:
        """Mismatch rate: pairs where the RM disagrees with the reference. Ties count as half a
        mismatch would hide them; we report them separately and exclude them here."""
        return wilson(self.wrong, self.correct + self.wrong, confidence)

    def accuracy(self, confidence: float = 0.95) -> Proportion:
        return wilson(self.correct, self.correct + self.wrong, confidence)


def pair_outcomes(r_preferred: Sequence[float], r_other: Sequence[float]) -> PairOutcomes:
    """Compare RM rewards on pairs whose reference preference is `preferred` > `other`."""
    d = np.asarray(r_preferred, float) - np.asarray(r_other, float)
    return PairOutcomes(int((d > 0).sum()), int((d < 0).sum()), int((d == 0).sum()))


def n_for_halfwidth(p: float, halfwidth: float, confidence: float = 0.95) -> int:
    """Labels needed so a proportion near p has a 95% interval of about ±halfwidth (normal approx.)."""
    z = stats.norm.ppf(0.5 + confidence / 2)
    p = min(max(p, 0.05), 0.95) if not math.isnan(p) else 0.5
    return int(math.ceil(z * z * p * (1 - p) / (halfwidth * halfwidth)))


def degenerate_mean(values: Sequence[float]) -> tuple[np.ndarray | None, float]:
    """(non-NaN values, their mean) — or (None, mean) when no interval can be formed (no values: mean NaN;
    one value or all equal: the interval is the mean itself). The preamble of every mean-with-interval."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return None, float("nan")
    m = float(v.mean())
    return (None if len(v) < 2 or np.all(v == v[0]) else v), m


def bootstrap_mean(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi) with a percentile bootstrap interval; degenerate inputs give (mean, mean, mean)."""
    v, m = degenerate_mean(values)
    if v is None:
        return m, m, m
    res = stats.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    return m, float(res.confidence_interval.low), float(res.confidence_interval.high)


def cohen_kappa(a: Sequence[str], b: Sequence[str]) -> float:
    """Cohen's kappa between two annotators' labels on the same items; nan when undefined
    (no items, or chance agreement is certain but observed agreement is not)."""
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError("raters must label the same items")
    if not a:
        return float("nan")
    cats = sorted(set(a) | set(b))
    po = sum(x == y for x, y in zip(a, b)) / len(a)
    pe = sum((a.count(c) / len(a)) * (b.count(c) / len(b)) for c in cats)
    if pe >= 1.0:
        return 1.0 if po == 1.0 else float("nan")
    return (po - pe) / (1 - pe)


def seam_variants(lp_gold: float, n_gold: int, r_gold: float, lp: Sequence[float], n: Sequence[int],
                  r: Sequence[float], alpha: float = 1.0, beta: float = 0.5) -> dict[str, float]:
    """Test oracle of the SQL macro `seam_variants` (the one definition): the four pre-registered SEAM
    variants of one item from its gold and its k probes (summed log-probs incl. EOS, token counts, RM scores)."""
    lp, n, r = (np.asarray(v, float) for v in (lp, n, r))
    h = (r > r_gold).astype(float)
    l_alpha = lp / np.maximum(n, 1) ** alpha
    l_paper = lp / np.maximum(n, 1) ** beta
    if h.sum() > 0:
        m = l_paper[h > 0].max()
        log_paper = float(m + np.log(np.exp(l_paper[h > 0] - m).sum()) - np.log(len(lp)))
    else:
        log_paper = float("-inf")
    m_c = max(lp.max(), lp_gold)
    e = np.exp(lp - m_c)
    cand = float((e * h).sum() / (np.exp(lp_gold - m_c) + e.sum()))
    return {"seam_alpha": float(np.mean(np.exp(l_alpha) * h)), "log_seam_paper": log_paper,
            "seam_cand": cand, "hack_rate": float(h.mean()), "k": len(lp)}
