"""Saturation of the pre-registered study: best-of-N with N up to `bon_n` (16 by default).

Each study PM samples `bon_n` answers to the first C prompts. Every human-arm grid RM (the *picker*) picks
its best of N; the *judge* scores the pick. The judge is an ensemble (mean score) of heads trained on B's
human chosen/rejected pairs: B is disjoint from A, so the judge is held out from the grid and is never one
of the pickers. Human labels do not exist for generated answers, so the judge is the only ground truth
here, and every table says so.

Why two comparisons: more optimisation pressure (N = bon_n vs N = bon_n / 4, per RM size) and a better RM
(largest vs second-largest size, at N = bon_n). "Saturated" is claimed only by equivalence (TOST: the 90%
interval inside +-margin, the margin in units of the judge-score SD over all samples), never by a failure
to reject; a significant decline under more pressure is reported as such (over-optimisation).

Pure: `compute(data, cfg)` reads a frozen `BoNData` and returns the two tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.stats import estimators as E
from analysis.study.evidence_data import RM

JUDGE = "judge: RMs trained on B (held out from the grid); no human labels exist for generated answers"


@dataclass(frozen=True)
class BoNData:
    """Best-of-N scores: per PM, [prompts, samples] arrays of each picker RM and of the judge."""

    mode: str                                    # human | proxy judge
    policies: list[str]
    prompts: list[str]                           # C item ids, in split order
    rms: list[RM]                                # the pickers (human-arm grid RMs)
    picker: dict[str, dict[str, np.ndarray]]     # policy -> RM ref -> [P, N] reward of each sample
    judge: dict[str, np.ndarray]                 # policy -> [P, N] judge score of each sample

    @property
    def sizes(self) -> list[int]:
        return sorted({r.size for r in self.rms})

    def seeds(self, size: int) -> list[RM]:
        return [r for r in self.rms if r.size == size]

    def judge_sd(self) -> float:
        """SD of the judge score over all samples of all PMs (the unit of the equivalence margin)."""
        vals = np.concatenate([np.ravel(j) for j in self.judge.values()]) if self.judge else np.array([])
        vals = vals[np.isfinite(vals)]
        return float(vals.std(ddof=1)) if len(vals) > 1 else math.nan


def levels(bon_n: int) -> list[int]:
    """N = 1, 2, 4, ... up to bon_n (bon_n itself included when it is not a power of two)."""
    out = [1 << k for k in range(bon_n.bit_length()) if 1 << k <= bon_n]
    return out if out[-1] == bon_n else out + [bon_n]


def quarter(bon_n: int) -> int:
    """The N that `bon_n` is compared with: the largest level <= bon_n / 4 (4 for 16)."""
    return max(n for n in levels(bon_n) if n <= max(1, bon_n // 4))


def quality(data: BoNData, policy: str, size: int, ns: list[int]) -> np.ndarray:
    """[P, len(ns)] expected judge score of the best-of-n pick, per prompt, mean over the size's seeds."""
    curves = [E.bon_curve(data.picker[policy][r.ref], data.judge[policy], ns) for r in data.seeds(size)]
    return np.mean(curves, axis=0)


def conclusion(lo95: float, hi95: float, lo90: float, hi90: float, margin: float) -> str:
    """Plain words for a delta with its 95% and 90% intervals (TOST at 5% with +-margin)."""
    if any(math.isnan(v) for v in (lo95, hi95, lo90, hi90)):
        return "inconclusive (no data)"
    if lo95 > 0:
        return "still improving"
    if hi95 < 0:
        return "declining (over-optimisation)"
    if lo90 > -margin and hi90 < margin:
        return "saturated (equivalent within ±margin)"
    return "inconclusive"


def _test_row(data: BoNData, policy: str, comparison: str, rm_size: int, bon_n: int, a: np.ndarray,
              b: np.ndarray, margin: float, sd: float, cfg) -> dict:
    d95 = E.paired_diff(a, b, 0.95, cfg.n_resamples, cfg.seed)
    d90 = E.paired_diff(a, b, 0.90, cfg.n_resamples, cfg.seed)
    n = int(np.sum(np.isfinite(a) & np.isfinite(b)))
    return dict(mode=data.mode, policy=policy, comparison=comparison, rm_size=rm_size, bon_n=bon_n,
                delta=d95[0], lo=d95[1], hi=d95[2], lo90=d90[1], hi90=d90[2],
                delta_sd=d95[0] / sd if math.isfinite(sd) and sd > 0 else None,
                margin=margin, margin_sd=cfg.bon_margin, judge_sd=sd, n=n,
                conclusion=conclusion(d95[1], d95[2], d90[1], d90[2], margin),
                note=f"paired bootstrap over {n} prompts; TOST +-{margin:.3g} (= {cfg.bon_margin} judge SD); {JUDGE}")


def compute(data: BoNData, cfg) -> dict[str, list[dict]]:
    ns = levels(cfg.bon_n)
    sd = data.judge_sd()
    margin = cfg.bon_margin * sd if math.isfinite(sd) else math.nan
    curve, tests = [], []
    for pm in data.policies:
        q = {size: quality(data, pm, size, ns) for size in data.sizes}
        for size, qs in q.items():
            for j, n in enumerate(ns):
                m, lo, hi = E.mean_ci(qs[:, j], n_resamples=cfg.n_resamples, seed=cfg.seed)
                g = E.paired_diff(qs[:, j], qs[:, 0], 0.95, cfg.n_resamples, cfg.seed)
                curve.append(dict(mode=data.mode, policy=pm, rm_size=size, bon_n=n, quality=m, lo=lo, hi=hi,
                                  gain=g[0], gain_lo=g[1], gain_hi=g[2], n=int(np.sum(np.isfinite(qs[:, j]))),
                                  n_seeds=len(data.seeds(size)), note=JUDGE))
            if len(ns) > 1:
                q4 = quarter(cfg.bon_n)
                tests.append(_test_row(data, pm, f"N {ns[-1]} vs {q4}", size, ns[-1], qs[:, -1],
                                       qs[:, ns.index(q4)], margin, sd, cfg))
        if len(data.sizes) > 1:
            big, second = data.sizes[-1], data.sizes[-2]
            tests.append(_test_row(data, pm, f"RM size {big} vs {second}", big, ns[-1], q[big][:, -1],
                                   q[second][:, -1], margin, sd, cfg))
    return {"study_saturation": curve, "study_saturation_test": tests}


def verdict(tests: list[dict]) -> str:
    """One sentence for the study's verdict (the judge and the absence of human labels said explicitly)."""
    if not tests:
        return "Saturation: not measured."
    parts = [f"{t['policy'].rsplit('/', 1)[-1]} {t['comparison']}"
             + (f" (rm-{t['rm_size']})" if t["comparison"].startswith("N ") else "") + f": {t['delta']:+.3g} "
             f"[{t['lo']:+.3g}, {t['hi']:+.3g}], {t['conclusion']}" for t in tests]
    return (f"Saturation (best-of-N, {JUDGE}; equivalence margin ±{tests[0]['margin']:.3g} = "
            f"{tests[0]['margin_sd']} judge SD): " + "; ".join(parts) + ".")
