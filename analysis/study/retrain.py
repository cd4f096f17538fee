"""What selection and augmentation share: the pool they select from, the per-item outcomes of a retrained
RM, and bootstrap rows. `Retrain` is how they get an RM trained on some pairs: a function from
(pairs, seed, tag) to a score function over the texts of `retrain_ids` (run.py trains real RMs; tests may
pass any deterministic scorer).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.stats import estimators as E
from analysis.stats.metrics import seam_sample
from analysis.study.config import ExperimentConfig
from analysis.study.data import Score, StudyData

Retrain = Callable[[list[tuple[str, str, str]], int, str], Score]


def retrain_ids(data: StudyData, cfg: ExperimentConfig) -> list[str]:
    """The texts every retrained RM is scored on: held-out pairs, bon PM samples, bon gold + worse."""
    need = set()
    for ds in data.heldout.values():
        for sid in data.samples_of.get(ds, []):
            e = data.by_sample[sid]
            need.update([e.gold, *e.rejected, *[x for v in e.worse.values() for x in v]])
    for sid in data.bon_ids:
        e = data.by_sample[sid]
        need.update([e.gold, *[x for v in cfg.variants for x in e.worse.get(v, [])],
                     *[x for pm in data.policies for x in e.policy[pm]]])
    return sorted(need)


@dataclass(frozen=True)
class Pool:
    """Pool samples with SEAM (primary PM, middle RM; mean over variants) and their training pairs
    (prompt, gold, worse, SEAM contribution w*h of the pair)."""
    ids: list[str]
    seam: np.ndarray
    pairs: list[list[tuple[str, str, str, float]]]


def pool(data: StudyData, cfg: ExperimentConfig) -> Pool:
    seam = defaultdict(list)
    for sid, ds, variant, pol, rew, s, *_ in data.seam_rows:
        if ds == data.pool_dataset and pol == data.primary_pm and rew == data.seam_rm and s is not None:
            seam[sid].append(s)
    ids = [s for s in data.samples_of.get(data.pool_dataset, []) if s in seam]
    pairs = []
    for sid in ids:
        e = data.by_sample[sid]
        gold_r = data.rm.get((e.gold, data.seam_rm))
        out = []
        for v in cfg.variants:
            for x in e.worse.get(v, []):
                lm = data.pm.get((x, data.primary_pm), (0, 0, -np.inf))[2]
                r = data.rm.get((x, data.seam_rm))
                contrib = math.exp(lm) * float(r is not None and gold_r is not None and r > gold_r)
                out.append((data.prompt[sid], data.resp[e.gold]["text"], data.resp[x]["text"], contrib))
        pairs.append(out)
    return Pool(ids, np.array([np.mean(seam[s]) for s in ids]), pairs)


def downstream_items(data: StudyData, cfg: ExperimentConfig, score: Score) -> dict[str, np.ndarray]:
    """Per-item outcomes of one RM: held-out pair correctness, best-of-N gold score per prompt (each PM and
    the mean over PMs), and SEAM on the bon prompts (primary PM, mean over variants)."""
    items = data.heldout_items(score)
    per_pm = []
    for pm in data.pm_order:
        rewards, gold, _ = data.bon_arrays(pm, score)
        pick = E.best_of_n(rewards, gold).pick
        items[f"bon_gold:{data.label(pm)}"] = pick
        per_pm.append(pick)
    items["bon_gold:all"] = np.nanmean(np.stack(per_pm), axis=0) if per_pm else np.array([])
    seams = []
    ppm = data.primary_pm
    for sid in data.bon_ids:
        e = data.by_sample[sid]
        g = data.pm.get((e.gold, ppm))
        vals = []
        for v in cfg.variants:
            worse = [x for x in e.worse.get(v, []) if (x, ppm) in data.pm]
            if g is None or not worse:
                continue
            res = seam_sample(g[0], g[1], score(e.gold), [data.pm[(x, ppm)][0] for x in worse],
                              [data.pm[(x, ppm)][1] for x in worse], [score(x) for x in worse])
            vals.append(res.seam)
        seams.append(np.mean(vals) if vals else np.nan)
    items["seam_heldout"] = np.asarray(seams, float)
    return items


def bootstrap_rows(cfg: ExperimentConfig, cond: dict, items: dict[str, np.ndarray],
                   ref: dict[str, np.ndarray] | None, extra_ref: dict[str, np.ndarray] | None = None) -> list[dict]:
    """One row per metric: mean with interval, the paired difference to `ref` (delta) and to `extra_ref`
    (vs_random)."""
    rows = []
    for metric, vals in items.items():
        m, lo, hi = E.mean_ci(vals, n_resamples=cfg.n_resamples, seed=cfg.seed)
        row = dict(metric=metric, value=m, lo=lo, hi=hi, n=int(np.sum(~np.isnan(np.asarray(vals, float)))), **cond)
        if ref is not None and metric in ref:
            row["delta"], row["delta_lo"], row["delta_hi"] = E.paired_diff(vals, ref[metric],
                                                                           n_resamples=cfg.n_resamples, seed=cfg.seed)
        if extra_ref is not None and metric in extra_ref:
            row["vs_random"], row["vs_random_lo"], row["vs_random_hi"] = E.paired_diff(
                vals, extra_ref[metric], n_resamples=cfg.n_resamples, seed=cfg.seed)
        rows.append(row)
    return rows


def average(items_list: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = items_list[0].keys()
    return {k: np.nanmean(np.stack([np.asarray(it[k], float) for it in items_list]), axis=0) for k in keys}
