"""SEAM validation: AUROC / Spearman of SEAM (each variant) for "the RM's best-of-N pick is not the judge's
best" and the per-prompt mismatch rate, per (PM, RM) cell and pooled, next to baselines (length, RM
margin, PM log-prob).

Tables: `seam_validation`, `seam_validation_items`.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from analysis.stats import estimators as E
from analysis.study.config import ExperimentConfig
from analysis.study.data import StudyData


def compute(data: StudyData, cfg: ExperimentConfig) -> dict[str, list[dict]]:
    stats_rows, items = [], []
    seam_by: dict[tuple, dict] = defaultdict(dict)   # (pm, rm, sid) -> predictor -> value
    for sid, ds, variant, pol, rew, seam, seam_rel, hack, k in data.seam_rows:
        if ds != data.bon_dataset:
            continue
        d = seam_by[(pol, rew, sid)]
        d[f"seam:{variant}"] = seam
        d[f"seam_rel:{variant}"] = seam_rel
        d[f"hack_rate:{variant}"] = hack
    pooled: dict[str, list] = defaultdict(list)   # predictor -> list of (score, notbest, mm, regret)
    for pm in data.pm_order:
        for rm in data.rm_order:
            out = data.bon(pm, rm)
            mm = data.prompt_mismatch(pm, rm)
            score = data.rm_score_nan(rm)
            preds: dict[str, list] = defaultdict(list)
            for i, sid in enumerate(data.bon_ids):
                d = dict(seam_by.get((pm, rm, sid), {}))
                seams = [v for kk, v in d.items() if kk.startswith("seam:") and v is not None]
                d["seam:mean"] = float(np.mean(seams)) if seams else np.nan
                e = data.by_sample[sid]
                ids = e.policy[pm]
                r = np.array([score(x) for x in ids])
                rs = np.sort(r[~np.isnan(r)])[::-1]
                gold_r = score(e.gold)
                worse = [x for v in cfg.variants for x in e.worse.get(v, [])]
                d["baseline:length"] = float(np.mean([data.pm.get((x, pm), (0, np.nan, 0))[1] for x in ids]))
                d["baseline:rm_margin"] = -float(np.mean([gold_r - score(x) for x in worse])) if worse else np.nan
                d["baseline:rm_pick_margin"] = -float(rs[0] - rs[1]) if len(rs) > 1 else np.nan
                d["baseline:pm_logprob"] = float(np.mean([math.exp(data.pm[(x, pm)][2]) for x in worse
                                                          if (x, pm) in data.pm])) if worse else np.nan
                d["baseline:pm_sample_logprob"] = -float(np.mean([data.pm.get((x, pm), (0, 0, np.nan))[2]
                                                                  for x in ids]))
                for name, v in d.items():
                    preds[name].append(np.nan if v is None else v)
                    items.append(dict(policy=pm, reward=rm, sample_id=sid, predictor=name, score=v,
                                      regret=out.regret[i], pick_not_best=bool(out.regret[i] > 1e-12),
                                      pair_mismatch_rate=mm[i]))
            notbest = out.regret > 1e-12
            for name, vals in preds.items():
                vals = np.asarray(vals, float)
                if len(vals) != len(notbest):
                    continue
                pooled[name].append((vals, notbest, mm, out.regret))
                stats_rows.extend(validation_rows(cfg, pm, rm, name, vals, notbest, mm, out.regret))
    for name, parts in pooled.items():
        stats_rows.extend(validation_rows(cfg, "all", "all", name, *(np.concatenate([p[j] for p in parts])
                                                                     for j in range(4))))
    return {"seam_validation": stats_rows, "seam_validation_items": items}


def validation_rows(cfg: ExperimentConfig, pm, rm, name, vals, notbest, mm, regret) -> list[dict]:
    kind = "baseline" if name.startswith("baseline:") else "seam"
    nres = min(cfg.n_resamples, 1000)
    a = E.auroc(vals, notbest, n_resamples=nres, seed=cfg.seed)
    s1 = E.spearman(vals, mm, n_resamples=nres, seed=cfg.seed)
    s2 = E.spearman(vals, regret, n_resamples=nres, seed=cfg.seed)
    base = dict(policy=pm, reward=rm, predictor=name, kind=kind)
    return [dict(base, target="pick_not_best", stat="auroc", value=a.value, lo=a.lo, hi=a.hi, n=a.n,
                 positives=a.positives),
            dict(base, target="pair_mismatch_rate", stat="spearman", value=s1.value, lo=s1.lo, hi=s1.hi,
                 n=s1.n, p_value=s1.p_value),
            dict(base, target="regret", stat="spearman", value=s2.value, lo=s2.lo, hi=s2.hi, n=s2.n,
                 p_value=s2.p_value)]
