"""Mismatch on PM samples: all pairs of one prompt's samples, RM vs judge (or human labels where they
exist) disagreement with a Wilson interval, next to the RM's accuracy on held-out dataset pairs.

Table: the `pm_samples` rows of `mismatch_rates`.
"""

from __future__ import annotations

import numpy as np

from analysis.stats import estimators as E
from analysis.stats.metrics import PairOutcomes
from analysis.study.config import ExperimentConfig
from analysis.study.data import StudyData


def compute(data: StudyData, cfg: ExperimentConfig) -> dict[str, list[dict]]:
    rows = []
    for pm in data.pm_order:
        for rm in data.rm_order:
            score = data.rm_score_nan(rm)
            tot = {"judge": [0, 0, 0, 0], "human": [0, 0, 0, 0], "human+judge": [0, 0, 0, 0]}
            for sid in data.bon_ids:
                ids = data.by_sample[sid].policy[pm]
                r = [score(x) for x in ids]
                g = [data.gold_score(x) for x in ids]
                oc, jt = E.pairwise_agreement(r, g)
                tot["judge"] = [a + b for a, b in zip(tot["judge"], (oc.correct, oc.wrong, oc.ties, jt))]
                if data.human:
                    h, hj = human_outcomes(data.human, ids, r, g)
                    tot["human"] = [a + b for a, b in zip(tot["human"], h)]
                    tot["human+judge"] = [a + b for a, b in zip(tot["human+judge"], hj)]
            acc = data.rm_heldout_accuracy(rm, "chatterbot_heldout")
            refs = [("judge", f"judge:{data.judge}")]
            if data.human:
                refs += [("human", "human"), ("human+judge", "human (judge where unlabelled)")]
            for key, ref_name in refs:
                c, w, t, jt = tot[key]
                mm = PairOutcomes(c, w, t).mismatch()
                rows.append(dict(policy=pm, reward=rm, pair_kind="pm_samples", reference=ref_name,
                                 k=mm.k, n=mm.n, rate=mm.p, lo=mm.lo, hi=mm.hi, ties=t, reference_ties=jt,
                                 rm_accuracy=acc[0], rm_accuracy_lo=acc[1], rm_accuracy_hi=acc[2]))
    return {"mismatch_rates": rows}


def human_outcomes(human: dict, ids: list[str], r: list[float], g: list[float]) -> tuple[list, list]:
    """(human-only counts, human-else-judge counts) as (correct, wrong, rm_ties, reference_ties)."""
    h = [0, 0, 0, 0]
    hj = [0, 0, 0, 0]
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            a, b = sorted((ids[i], ids[j]))
            ia, ib = (i, j) if ids[i] == a else (j, i)
            lab = human.get((a, b))
            if lab is not None:
                pref = None if lab == "tie" else (ia if lab == "a" else ib)
                src = (h, hj)
            else:
                pref = None if g[ia] == g[ib] else (ia if g[ia] > g[ib] else ib)
                src = (hj,)
                if np.isnan(g[ia]) or np.isnan(g[ib]):
                    continue
            other = ib if pref == ia else ia
            for acc in src:
                if pref is None:
                    acc[3] += 1
                elif r[pref] > r[other]:
                    acc[0] += 1
                elif r[pref] < r[other]:
                    acc[1] += 1
                else:
                    acc[2] += 1
    return h, hj
