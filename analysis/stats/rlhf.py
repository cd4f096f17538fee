"""Pure estimators of the real RLHF grid (`seam rlhf-grid`): win rate, KL reached, proxy vs real.

Kept free of models and storage so the tests can check them on hand-built numbers and the dashboard can
recompute them from stored rows with the same definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from analysis.stats.estimators import Ranked, spearman
from analysis.stats.metrics import bootstrap_mean


def win_items(trained: Sequence[float], start: Sequence[float]) -> np.ndarray:
    """Per prompt: 1 when the judge scores the trained policy's answer above the starting PM's answer,
    1/2 on a tie, 0 below (pairs with a NaN are dropped). Ties count half so a policy that did not
    change at all sits at exactly 0.5, the no-effect line."""
    t, s = np.asarray(trained, float), np.asarray(start, float)
    if t.shape != s.shape:
        raise ValueError(f"trained and start scores differ in shape: {t.shape} vs {s.shape}")
    ok = ~(np.isnan(t) | np.isnan(s))
    t, s = t[ok], s[ok]
    return np.where(t > s, 1.0, np.where(t < s, 0.0, 0.5))


def win_rate(trained: Sequence[float], start: Sequence[float], confidence: float = 0.95,
             n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """(win rate, lo, hi, n): mean of `win_items` with a percentile bootstrap over prompts."""
    items = win_items(trained, start)
    m, lo, hi = bootstrap_mean(items, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return m, lo, hi, int(len(items))


def kl_items(logp_policy: Sequence[float], logp_ref: Sequence[float]) -> np.ndarray:
    """Per sampled answer y ~ π (the trained policy): log π(y|x) − log π_ref(y|x), the single-sample
    Monte-Carlo term of KL(π || π_ref) = E_{y~π}[log π(y|x) − log π_ref(y|x)] (nats per answer).
    Individual terms can be negative; their mean is an unbiased estimate of the (non-negative) KL."""
    p, r = np.asarray(logp_policy, float), np.asarray(logp_ref, float)
    if p.shape != r.shape:
        raise ValueError(f"log-prob arrays differ in shape: {p.shape} vs {r.shape}")
    d = p - r
    return d[~np.isnan(d)]


def kl_estimate(logp_policy: Sequence[float], logp_ref: Sequence[float], confidence: float = 0.95,
                n_resamples: int = 2000, seed: int = 0) -> tuple[float, float, float, int]:
    """(KL, lo, hi, n): mean of `kl_items` with a percentile bootstrap over answers."""
    items = kl_items(logp_policy, logp_ref)
    m, lo, hi = bootstrap_mean(items, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return m, lo, hi, int(len(items))


@dataclass(frozen=True)
class ProxyVsReal:
    """How well the cheap proxy ranks the grid's cells compared with the real RL runs."""

    rank: Ranked                 # Spearman across cells with a bootstrap interval (NaN below 3 cells)
    cells: list[dict]            # per cell: policy, reward, proxy, real, proxy_rank, real_rank, shift
    disagreements: list[dict]    # cells whose rank differs by at least `min_shift` places, largest first


def proxy_vs_real(cells: Sequence[dict], *, min_shift: int = 1, n_resamples: int = 1000,
                  seed: int = 0) -> ProxyVsReal:
    """Compare proxy and real values over the cells both have (dicts with policy, reward, proxy, real).

    Ranks (1 = best, ties averaged) are compared rather than values: the proxy and the real metric live
    on different scales, and what a user asks of the proxy is "does it order PM × RM cells the way RL
    does". `shift` = real rank − proxy rank: positive when the proxy ranks the cell too high.
    """
    from scipy.stats import rankdata

    rows = [dict(c) for c in cells if np.isfinite(float(c["proxy"])) and np.isfinite(float(c["real"]))]
    if not rows:
        return ProxyVsReal(Ranked(float("nan"), float("nan"), float("nan"), 0), [], [])
    proxy = np.array([float(c["proxy"]) for c in rows])
    real = np.array([float(c["real"]) for c in rows])
    pr, rr = rankdata(-proxy), rankdata(-real)
    for c, a, b in zip(rows, pr, rr):
        c.update(proxy_rank=float(a), real_rank=float(b), shift=float(b - a))
    rank = spearman(proxy, real, n_resamples=n_resamples, seed=seed)
    dis = sorted((c for c in rows if abs(c["shift"]) >= min_shift), key=lambda c: -abs(c["shift"]))
    return ProxyVsReal(rank, rows, dis)
