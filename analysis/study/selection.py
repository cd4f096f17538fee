"""Selection: drop the top-q% SEAM pool samples vs bottom-q% vs random-q% (seeds) vs none, retrain the RM
on the kept pairs, and measure held-out accuracy, best-of-N gold quality on `bon` prompts and SEAM.

Table: `selection_results` (per seed, and seed = NULL for the mean over seeds).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import numpy as np

from analysis.stats import estimators as E
from analysis.study.config import ExperimentConfig
from analysis.study.data import StudyData
from analysis.study.retrain import Retrain, average, bootstrap_rows, downstream_items, pool


def compute(data: StudyData, cfg: ExperimentConfig, retrain: Retrain,
            log: Callable[[str], None] = lambda m: None) -> dict[str, list]:
    p = pool(data, cfg)
    if len(p.ids) < 4:
        return {"selection_results": [], "notes": ["selection skipped: fewer than 4 pool samples with SEAM"]}
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    runs: dict[tuple, list[tuple[int, dict, dict]]] = defaultdict(list)
    conds = [("none", None)] + [(c, q) for q in cfg.selection_q for c in ("drop_top", "drop_bottom", "drop_random")]
    for cond, q in conds:
        for s in seeds:
            if cond == "none":
                keep = np.ones(len(p.ids), bool)
            else:
                keep = E.drop_mask(p.seam, q, cond.removeprefix("drop_"), seed=s)
            pairs = [x[:3] for i in np.nonzero(keep)[0] for x in p.pairs[i]]
            log(f"selection {cond} q={q} seed={s}: retrain on {len(pairs)} pairs of {int(keep.sum())} samples")
            score = retrain(pairs, s, f"sel-{cond}-{q}-{s}")
            info = dict(kept_samples=int(keep.sum()), train_pairs=len(pairs),
                        mean_seam_kept=float(np.mean(p.seam[keep])))
            runs[(cond, q)].append((s, downstream_items(data, cfg, score), info))
    rows = []
    none = {s: it for s, it, _ in runs[("none", None)]}
    none_avg = average(list(none.values()))
    for (cond, q), lst in runs.items():
        rand = {s: it for s, it, _ in runs.get(("drop_random", q), [])} if cond in ("drop_top", "drop_bottom") else {}
        for s, items, info in lst:
            rows += bootstrap_rows(cfg, dict(condition=cond, q=q, seed=s, **info), items,
                                   None if cond == "none" else none[s], rand.get(s))
        agg = dict(lst[0][2], mean_seam_kept=float(np.mean([info["mean_seam_kept"] for _, _, info in lst])))
        rows += bootstrap_rows(cfg, dict(condition=cond, q=q, seed=None, **agg), average([it for _, it, _ in lst]),
                               None if cond == "none" else none_avg, average(list(rand.values())) if rand else None)
    return {"selection_results": rows}
