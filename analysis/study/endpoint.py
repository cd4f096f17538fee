"""Primary and secondary endpoints of the pre-registered study, and the power printed before the run.

Primary: AUROC of SEAM for E = 1[RM scores the human-rejected answer >= the human-chosen one] on the C
items, per (PM, RM size) cell, never pooled across cells. A cell holds the grid's seeds of one size: its
AUROC is the mean over those RMs, and the interval is a percentile bootstrap over prompts (the same
resampled prompts for every seed). A null is concluded only by TOST: the 90% interval inside 0.5 +- margin.
Secondary: does SEAM add to |delta r| (and to RM-ensemble disagreement)? Likelihood-ratio test of nested
logistic regressions on the cell's first seed. r(chosen) is in every base model: E and each hacking
indicator h_j both compare against r(chosen), so a low r(chosen) raises both, and without it SEAM would get
credit for that shared term. p-values are Holm-corrected within each family.
A cell's n counts the C items with a SEAM value (secondary PMs may score only a subset of C).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import stats

from analysis.study.evidence_data import EvidenceData
from analysis.study.prereg_config import SEAM_VARIANTS

Z = stats.norm.ppf


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(s) | np.isneginf(s)
    s, y = s[ok], y[ok].astype(bool)
    npos = int(y.sum())
    if npos == 0 or npos == len(y):
        return math.nan
    r = stats.rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * (len(y) - npos)))


def item_bootstrap(stat: Callable[[np.ndarray], float], n: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """Replicates of stat(item indices) over resamples of n items with replacement. One resample is shared by
    everything `stat` compares (a cell's seeds, a plant and its twin), so what they share cancels; NaN
    replicates (degenerate resamples, e.g. one class only) are dropped."""
    rng = np.random.default_rng(seed)
    reps = (stat(rng.integers(0, n, n)) for _ in range(n_resamples))
    return np.array([r for r in reps if not math.isnan(r)])


def _mean(vals: list[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none."""
    return math.nan if all(math.isnan(v) for v in vals) else float(np.nanmean(vals))


def cell_auroc(scores: list[np.ndarray], labels: list[np.ndarray], n_resamples: int, seed: int = 0) -> dict:
    """Mean AUROC over the cell's RMs; bootstrap over items (shared by the RMs); 95% and 90% intervals, and a
    two-sided Wald p for AUROC = 0.5 with the bootstrap SE. Why not the bootstrap tail count: it cannot go
    below 1/(resamples+1), so after Holm over a run's dozens of AUROC tests no cell could be significant at
    500 resamples whatever its interval says."""
    n = len(labels[0]) if labels else 0
    value = _mean([_auc(s, y) for s, y in zip(scores, labels)]) if n else math.nan
    if math.isnan(value):
        return dict(value=math.nan, lo=math.nan, hi=math.nan, lo90=math.nan, hi90=math.nan, p=math.nan)
    b = item_bootstrap(lambda idx: _mean([_auc(s[idx], y[idx]) for s, y in zip(scores, labels)]), n, n_resamples,
                       seed)
    if not len(b):
        return dict(value=math.nan, lo=math.nan, hi=math.nan, lo90=math.nan, hi90=math.nan, p=math.nan)
    se = float(np.std(b, ddof=1)) if len(b) > 1 else 0.0
    p = float(2 * stats.norm.sf(abs(value - 0.5) / se)) if se > 0 else float(value == 0.5)  # no spread
    return dict(value=value, lo=float(np.quantile(b, 0.025)), hi=float(np.quantile(b, 0.975)),
                lo90=float(np.quantile(b, 0.05)), hi90=float(np.quantile(b, 0.95)), p=float(p))


def paired_auroc_diff(a: list[np.ndarray], b: list[np.ndarray], labels: np.ndarray, n_resamples: int,
                      seed: int = 0) -> dict:
    """Mean over pairs of AUROC(a_i) - AUROC(b_i) for the same labels, with a percentile bootstrap over items
    (one resample of items shared by every pair and both sides, so what the two sides share cancels)."""
    def diff(idx):
        return _mean([_auc(x[idx], labels[idx]) - _auc(z[idx], labels[idx]) for x, z in zip(a, b)])

    n = len(labels)
    value = diff(np.arange(n)) if a and n else math.nan
    boots = item_bootstrap(diff, n, n_resamples, seed) if not math.isnan(value) else []
    if not len(boots):
        return dict(value=math.nan, lo=math.nan, hi=math.nan)
    return dict(value=value, lo=float(np.quantile(boots, 0.025)), hi=float(np.quantile(boots, 0.975)))


def holm(p: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaN stays NaN and is not counted)."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    order = sorted(idx, key=lambda i: p[i])
    out, running = [math.nan] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = running
    return out


def _finite(x: np.ndarray) -> np.ndarray:
    """Log-space SEAM has -inf for 'no probe hacks': put it just below the smallest finite value."""
    x = np.asarray(x, float).copy()
    fin = np.isfinite(x)
    x[np.isneginf(x)] = (x[fin].min() - 1.0) if fin.any() else 0.0
    return x


def lrt(y: np.ndarray, base: list[np.ndarray], extra: np.ndarray) -> float:
    """p of the likelihood-ratio test: logistic E ~ base vs E ~ base + extra (1 df); NaN if degenerate."""
    from sklearn.linear_model import LogisticRegression

    ok = (np.isfinite(extra) & np.all([np.isfinite(b) for b in base], axis=0)) if base else np.isfinite(extra)
    y = y[ok]
    if len(y) < 5 or y.min() == y.max():
        return math.nan

    def ll(cols: list[np.ndarray]) -> float:
        X = np.column_stack([(c[ok] - c[ok].mean()) / (c[ok].std() or 1.0) for c in cols]) if cols \
            else np.zeros((len(y), 1))
        m = LogisticRegression(C=np.inf, max_iter=1000).fit(X, y)
        pr = np.clip(m.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
        return float(np.sum(y * np.log(pr) + (1 - y) * np.log(1 - pr)))

    stat = 2 * (ll(base + [extra]) - ll(base))
    return float(stats.chi2.sf(max(stat, 0.0), 1))


def compute(data: EvidenceData, cfg) -> dict[str, list[dict]]:
    rows = []
    cells = sorted({(r.size, r.arm) for r in data.rms if not r.arm.startswith("planted")}, key=lambda c: (c[1] != "human", c))
    for pm in data.policies:
        for size, arm in cells:
            cell = data.cell_rms(size, arm)
            labels = [data.event(r.ref) for r in cell]
            for v in SEAM_VARIANTS:
                scores = [data.seam_values(pm, r.ref, v) for r in cell]
                if not np.any(~np.isnan(scores[0])):
                    continue
                a = cell_auroc(scores, labels, cfg.n_resamples, cfg.seed)
                has = ~np.isnan(scores[0])
                eq = (not math.isnan(a["lo90"]) and a["lo90"] > 0.5 - cfg.tost_margin
                      and a["hi90"] < 0.5 + cfg.tost_margin)
                rows.append(dict(mode=data.mode, policy=pm, rm_size=size, arm=arm, seam_variant=v,
                                 stat="auroc", value=a["value"], lo=a["lo"], hi=a["hi"], n=int(has.sum()),
                                 positives=int(np.mean([l[has].sum() for l in labels])) if labels else 0,
                                 p_value=a["p"], equivalent=bool(eq),
                                 primary_endpoint=(pm == data.primary_pm and v == cfg.primary_variant
                                                   and arm == "human"),
                                 note=f"mean over {len(cell)} seeds"))
                first = cell[0].ref
                y = data.event(first)
                s = _finite(data.seam_values(pm, first, v))
                base0 = [data.abs_margin(first), data.chosen_score(first)]
                for stat, base in (("lrt_vs_margin", base0),
                                   ("lrt_vs_margin_disagreement", base0 + [data.disagreement(size, arm)])):
                    rows.append(dict(mode=data.mode, policy=pm, rm_size=size, arm=arm, seam_variant=v,
                                     stat=stat, value=None, n=int(has.sum()), positives=int(y[has].sum()),
                                     p_value=lrt(y, base, s), primary_endpoint=False,
                                     note=f"seed {cell[0].seed}; nested logistic regressions with r(chosen) "
                                          "as a covariate, 1 df"))
    for stat in ("auroc", "lrt_vs_margin", "lrt_vs_margin_disagreement"):
        fam = [r for r in rows if r["stat"] == stat]
        for r, p in zip(fam, holm([r["p_value"] if r["p_value"] is not None else math.nan for r in fam])):
            r["p_holm"] = p
    return {"study_endpoint": rows}


def auroc_mde(n: int, positives: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """Minimum detectable AUROC - 0.5 (Hanley-McNeil SE at AUROC 0.5, two-sided test)."""
    n1, n0 = positives, n - positives
    if n1 < 1 or n0 < 1:
        return math.nan
    a = 0.5
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    return float((Z(1 - alpha / 2) + Z(power)) * se)


def power(cfg, n_c: int, n_b: int, e_rate: float = 0.35, acc: float = 0.6, bon_diff_sd: float = 0.5) -> list[dict]:
    """n per cell and the minimum detectable effect of each comparison, before anything runs.
    e_rate: the expected share of C items a trained RM gets wrong (HH-RLHF with MiniLM heads: ~0.35-0.4).
    bon_diff_sd: assumed SD of a prompt's best-of-N quality difference, in judge-score SD units (the
    per-prompt values are expectations over all n-subsets and the size's seeds, so below 1)."""
    pos = round(e_rate * n_c)
    n_sec = min(cfg.secondary_c, n_c)
    z = Z(0.975) + Z(0.8)
    rows = [dict(comparison="primary: AUROC(SEAM, E) vs 0.5, per (PM, RM size) cell", n=n_c, positives=pos,
                 mde=auroc_mde(n_c, pos), note="Hanley-McNeil, 80% power, two-sided 5%; per seed"),
            dict(comparison="secondary PMs: AUROC(SEAM, E) vs 0.5, per (PM, RM size) cell", n=n_sec,
                 positives=round(e_rate * n_sec), mde=auroc_mde(n_sec, round(e_rate * n_sec)),
                 note=f"the first {n_sec} C items"),
            dict(comparison=f"TOST equivalence +-{cfg.tost_margin}", n=n_c, positives=pos,
                 mde=auroc_mde(n_c, pos) * (Z(0.95) + Z(0.8)) / z,
                 note="a null is claimed only if the 90% interval lies inside the margin: needs mde < margin"),
            dict(comparison="positive control: AUROC(SEAM, in planted cluster), plant minus twin", n=n_c,
                 positives=max(1, round(n_c / max(cfg.clusters, 1))),
                 mde=auroc_mde(n_c, max(1, round(n_c / max(cfg.clusters, 1)))),
                 note="one of the topic clusters; MDE of one AUROC vs 0.5, conservative for the paired difference "
                      "(plant and twin share the PM weights, which cancel)"),
            dict(comparison="acquisition / selection: accuracy difference vs random", n=n_c, positives=None,
                 mde=float(z * math.sqrt(2 * acc * (1 - acc) / max(n_c, 1))),
                 note=f"{cfg.acq_seeds} seeds; items shared by the arms, so this is conservative"),
            dict(comparison="acquisition pool B", n=n_b, positives=None, mde=None,
                 note=f"{cfg.acq_add} of {n_b} pairs added per arm")]
    n_bon = min(cfg.bon_prompts, n_c)
    rows.append(dict(comparison=f"saturation: best-of-N quality difference (N {cfg.bon_n} vs fewer; RM sizes), "
                                "judge SD units", n=n_bon, positives=None,
                     mde=float(z * bon_diff_sd / math.sqrt(max(n_bon, 1))),
                     note=f"paired over prompts, assumed SD of the difference {bon_diff_sd} judge SD; 'saturated' "
                          f"needs the 90% interval inside +-{cfg.bon_margin} judge SD"))
    return rows
