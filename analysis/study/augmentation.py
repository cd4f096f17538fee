"""Augmentation: add M (gold > worse) pool pairs from the highest-SEAM samples vs M random pool pairs to a
base RM training set; held-out accuracy and SEAM shift, several seeds.

Table: `augmentation_results` (per seed, and seed = NULL for the mean over seeds).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from analysis.study.config import ExperimentConfig
from analysis.study.data import StudyData
from analysis.study.retrain import Retrain, average, bootstrap_rows, downstream_items, pool


def compute(data: StudyData, cfg: ExperimentConfig, retrain: Retrain,
            log: Callable[[str], None] = lambda m: None) -> dict[str, list]:
    p = pool(data, cfg)
    flat = [(i, x) for i, pairs in enumerate(p.pairs) for x in pairs]
    if not flat:
        return {"augmentation_results": [], "notes": ["augmentation skipped: no pool pairs"]}
    m = min(cfg.aug_pairs, len(flat))
    base = list(data.train_pairs[: cfg.aug_base_pairs])
    # highest-SEAM samples first; inside a sample, the pairs that contribute most to its SEAM first
    order = np.argsort(-p.seam, kind="stable")
    seam_pairs = [x[:3] for i in order for x in sorted(p.pairs[i], key=lambda t: -t[3])][:m]
    res: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for s in (cfg.seed + i for i in range(cfg.seeds)):
        rng = np.random.default_rng(10_000 + s)
        rand_pairs = [flat[j][1][:3] for j in rng.choice(len(flat), m, replace=False)]
        for cond, add in (("base", []), ("seam", seam_pairs), ("random", rand_pairs)):
            log(f"augmentation {cond} seed={s}: {len(base)} base + {len(add)} added pairs")
            score = retrain(base + add, s, f"aug-{cond}-{s}")
            res[cond].append((s, downstream_items(data, cfg, score)))
    base_by, rand_by = dict(res["base"]), dict(res["random"])
    base_avg, rand_avg = average(list(base_by.values())), average(list(rand_by.values()))
    rows = []
    for cond, lst in res.items():
        added = 0 if cond == "base" else m
        cond_info = dict(condition=cond, added_pairs=added, train_pairs=len(base) + added)
        for s, items in lst:
            rows += bootstrap_rows(cfg, dict(cond_info, seed=s), items, None if cond == "base" else base_by[s],
                                   rand_by[s] if cond == "seam" else None)
        rows += bootstrap_rows(cfg, dict(cond_info, seed=None), average([it for _, it in lst]),
                               None if cond == "base" else base_avg, rand_avg if cond == "seam" else None)
    return {"augmentation_results": rows}
