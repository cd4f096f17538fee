"""Quality of each model alone: RM (and judge) accuracy on held-out pairs, PM quality as the judge sees it.

Tables: `model_quality` and the dataset-pair rows of `mismatch_rates` (an RM's error rate on held-out
pairs, next to which the PM-sample mismatch is read).
"""

from __future__ import annotations

import numpy as np

from analysis.stats import estimators as E
from analysis.stats.metrics import pair_outcomes
from analysis.study.config import ExperimentConfig
from analysis.study.data import StudyData, heldout_groups


def compute(data: StudyData, cfg: ExperimentConfig) -> dict[str, list[dict]]:
    quality, mismatch = [], []
    for ref in data.scored_rms:
        role = "judge" if ref == data.judge else "reward"
        for ds_name, ds in data.heldout.items():
            for name, (g, w) in heldout_groups(ds_name, data.dataset_pairs(ds, data.rm_score(ref))).items():
                oc = pair_outcomes(g, w)
                acc, mm = oc.accuracy(), oc.mismatch()
                quality.append(dict(model=ref, role=role, label=data.label(ref), metric=f"acc:{name}", value=acc.p,
                                    lo=acc.lo, hi=acc.hi, n=acc.n))
                mismatch.append(dict(policy=None, reward=ref, pair_kind=f"dataset:{name}", reference="dataset",
                                     k=mm.k, n=mm.n, rate=mm.p, lo=mm.lo, hi=mm.hi, ties=oc.ties, reference_ties=0,
                                     rm_accuracy=acc.p, rm_accuracy_lo=acc.lo, rm_accuracy_hi=acc.hi))
    # PM quality: the judge's view of each PM's own samples (N = 1), plus how well it models gold.
    nan3 = (np.nan, np.nan, np.nan)
    for pm in data.policies:
        per_prompt_mean, win_vs_gold, toks, gold_lp = [], [], [], []
        for sid in data.bon_ids:
            e = data.by_sample[sid]
            ids = e.policy[pm]
            g = np.array([data.gold_score(r) for r in ids])
            per_prompt_mean.append(float(np.mean(g)))
            gg = data.gold_score(e.gold)
            win_vs_gold.append(float(np.mean((g > gg) + 0.5 * (g == gg))))
            toks.append(np.mean([data.pm.get((r, pm), nan3)[1] for r in ids]))
            gold_lp.append(data.pm.get((e.gold, pm), nan3)[2])
        for metric, vals in (("judge_mean", per_prompt_mean), ("judge_win_vs_gold", win_vs_gold),
                             ("mean_tokens", toks), ("gold_logprob_mean", gold_lp)):
            m, lo, hi = E.mean_ci(vals, n_resamples=cfg.n_resamples, seed=cfg.seed)
            quality.append(dict(model=pm, role="policy", label=data.label(pm), metric=metric, value=m, lo=lo, hi=hi,
                                n=len(vals)))
    return {"model_quality": quality, "mismatch_rates": mismatch}
