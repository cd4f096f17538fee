"""Saturation (best-of-N proxy): per (PM, RM) cell the RM picks one of N samples and the judge scores the
pick; gain over N = 1 and win rate with bootstrap intervals; where each axis stops improving.

Tables: `saturation_grid`, `saturation_curve`, `saturation_picks`, `saturation_summary`.
"""

from __future__ import annotations

import numpy as np

from analysis.stats import estimators as E
from analysis.study.config import ExperimentConfig
from analysis.study.data import StudyData


def compute(data: StudyData, cfg: ExperimentConfig) -> dict[str, list[dict]]:
    grid, curve_rows, picks, summary = [], [], [], []
    ns = list(range(1, cfg.policy_samples + 1))
    pm_order, rm_order = data.pm_order, data.rm_order
    bon: dict[tuple[str, str], E.BoNOutcome] = {}
    for pm in pm_order:
        for rm in rm_order:
            rewards, gold, rids = data.bon_arrays(pm, data.rm_score_nan(rm))
            out = E.best_of_n(rewards, gold)
            bon[(pm, rm)] = out
            qm = E.mean_ci(out.pick, n_resamples=cfg.n_resamples, seed=cfg.seed)
            gm = E.mean_ci(out.gain, n_resamples=cfg.n_resamples, seed=cfg.seed)
            wm = E.mean_ci(out.win, n_resamples=cfg.n_resamples, seed=cfg.seed)
            grid.append(dict(
                policy=pm, reward=rm, policy_label=data.label(pm), reward_label=data.label(rm),
                policy_rank=pm_order.index(pm), reward_rank=rm_order.index(rm),
                metric="bon_gold", judge=data.judge, bon_n=int(np.max(out.n_samples)) if len(out.n_samples) else 0,
                n=int(np.sum(~np.isnan(out.pick))), quality=qm[0], quality_lo=qm[1], quality_hi=qm[2],
                random_quality=float(np.nanmean(out.random)), oracle_quality=float(np.nanmean(out.oracle)),
                gain=gm[0], gain_lo=gm[1], gain_hi=gm[2], win_rate=wm[0], win_lo=wm[1], win_hi=wm[2],
                regret=float(np.nanmean(out.regret))))
            curve = E.bon_curve(rewards, gold, ns)
            for j, n in enumerate(ns):
                m, lo, hi = E.mean_ci(curve[:, j], n_resamples=cfg.n_resamples, seed=cfg.seed)
                curve_rows.append(dict(policy=pm, reward=rm, bon_n=n, quality=m, quality_lo=lo, quality_hi=hi,
                                       n=int(np.sum(~np.isnan(curve[:, j])))))
            for sid, r_, ids, pick, rnd, orc, win, nsm in zip(data.bon_ids, rewards, rids, out.pick, out.random,
                                                               out.oracle, out.win, out.n_samples):
                w = E.bon_pick_weights(r_)
                picks.append(dict(policy=pm, reward=rm, sample_id=sid,
                                  pick_response_id=ids[int(np.argmax(w))] if w.any() else None,
                                  pick_gold=pick, random_gold=rnd, oracle_gold=orc, win=win, n_samples=nsm))
    # where does it saturate? along RMs (PM fixed) and along PMs (RM fixed)
    for axis, fixed_list, levels_of in (("reward", pm_order, lambda f: [(f, r) for r in rm_order]),
                                        ("policy", rm_order, lambda f: [(p, f) for p in pm_order])):
        for fixed in fixed_list:
            cells = levels_of(fixed)
            mat = np.stack([bon[c].pick for c in cells])
            res = E.saturation_point(mat, n_resamples=cfg.n_resamples, seed=cfg.seed)
            level_refs = [c[1] if axis == "reward" else c[0] for c in cells]
            at = data.label(level_refs[res.index])
            last = res.steps[-1] if res.steps else (np.nan, np.nan, np.nan)
            what = "RMs" if axis == "reward" else "PMs"
            if res.saturated and res.index == 0:
                b = res.vs_index
                desc = (f"{data.label(fixed)} fixed: no stronger {what[:-1]} beats the weakest ({at}) significantly "
                        f"(flat within noise; best difference {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}], "
                        f"n = {mat.shape[1]} prompts)")
            elif res.saturated:
                b = res.vs_index
                desc = (f"{data.label(fixed)} fixed: best-of-N quality stops improving at {at}; stronger "
                        f"{what} add {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}]")
            else:
                desc = (f"{data.label(fixed)} fixed: still improving at the strongest level {at} "
                        f"(last step {last[0]:+.3f} [{last[1]:+.3f}, {last[2]:+.3f}])")
            summary.append(dict(
                axis=axis, fixed=fixed, fixed_label=data.label(fixed), levels=len(cells),
                saturates_at=at, saturates_rank=res.index, saturated=res.saturated,
                last_step=last[0], last_step_lo=last[1], last_step_hi=last[2],
                beyond=res.vs_index[0] if res.vs_index else None,
                beyond_lo=res.vs_index[1] if res.vs_index else None,
                beyond_hi=res.vs_index[2] if res.vs_index else None, description=desc))
    return {"saturation_grid": grid, "saturation_curve": curve_rows, "saturation_picks": picks,
            "saturation_summary": summary}
