"""Acquisition and selection arms of the pre-registered study, summarised from per-item outcomes.

The orchestration trains one RM per (analysis, arm, q, seed) and records, per C item, whether it ranks
the human-chosen answer above the rejected one (`data.retrain`). This module only summarises: mean
accuracy per arm with a two-way bootstrap (seeds and items resampled), and the difference to the
random arm resampled the same way (paired).
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from analysis.study.evidence_data import EvidenceData


def _matrix(rows: list[dict], items: list[str]) -> np.ndarray:
    seeds = sorted({r["seed"] for r in rows})
    m = np.full((len(seeds), len(items)), np.nan)
    si, ii = {s: k for k, s in enumerate(seeds)}, {i: k for k, i in enumerate(items)}
    for r in rows:
        m[si[r["seed"]], ii[r["item"]]] = r["correct"]
    return m


def compute(data: EvidenceData, cfg) -> dict[str, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in data.retrain:
        groups[(r["analysis"], r["q"], r["arm"])].append(r)
    out, rng = [], np.random.default_rng(cfg.seed)
    for (analysis, q, arm), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])):
        m = _matrix(rows, data.items)
        ref_rows = groups.get((analysis, q, "random"))
        ref = _matrix(ref_rows, data.items) if ref_rows and arm != "random" else None
        boots, deltas = [], []
        S, N = m.shape
        for _ in range(cfg.n_resamples):
            s, i = rng.integers(0, S, S), rng.integers(0, N, N)
            boots.append(np.nanmean(m[np.ix_(s, i)]))
            if ref is not None and ref.shape == m.shape:
                deltas.append(np.nanmean(m[np.ix_(s, i)]) - np.nanmean(ref[np.ix_(s, i)]))
        d = float(np.nanmean(m) - np.nanmean(ref)) if ref is not None and ref.shape == m.shape else None
        out.append(dict(analysis=analysis, arm=arm, q=q, accuracy=float(np.nanmean(m)),
                        lo=float(np.quantile(boots, 0.025)), hi=float(np.quantile(boots, 0.975)),
                        delta_vs_random=d,
                        delta_lo=float(np.quantile(deltas, 0.025)) if deltas else None,
                        delta_hi=float(np.quantile(deltas, 0.975)) if deltas else None,
                        n_seeds=S, n_items=N))
    return {"study_retrain": out}


def _row(controls: list[dict], control: str, variant: str | None = None) -> dict | None:
    """The first controls row whose name starts with `control` (and of `variant`, if given), or None."""
    return next((c for c in controls if c["control"].startswith(control)
                 and (variant is None or c["seam_variant"] == variant)), None)


def _pm_scale(controls: list[dict]) -> str:
    """Why a PM-weighted SEAM missed the plant, from the reference rows (empty when they are absent)."""
    term = _row(controls, "reference: PM term alone")
    c = _row(controls, "reference: ceiling")
    r = _row(controls, "reference: within-item rise")
    out = ""
    if term and not math.isnan(term["value"]):
        out += (f" Its PM term alone, with no RM at all, gives the cluster AUROC {term['value']:.2f} "
                f"[{term['lo']:.2f}, {term['hi']:.2f}] (Spearman rho with the plant's SEAM {term['rho']:.2f}): the PM's "
                "likelihood of each prompt's probes, not the RM's failure, orders the items.")
    if c and not math.isnan(c["value"]):
        out += (f" Even the strongest possible plant, every probe of every cluster item hacked, would reach AUROC "
                f"{c['value']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]"
                + (": in absolute terms no plant could stand out with this variant on these items." if c["lo"] <= 0.5
                   else "."))
    if r and not math.isnan(r["value"]):
        seen = "rose" if r["lo"] > 0.5 else ("fell" if r["hi"] < 0.5 else "did not measurably rise")
        out += (f" Within items, where that scale cancels, SEAM {seen} on the planted cluster (plant minus twin: "
                f"AUROC {r['value']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]).")
    return out


def verdict(data: EvidenceData, cfg, endpoint: list[dict], controls: list[dict], retrain: list[dict]) -> str:
    """One paragraph in plain words, generated from the numbers (including 'no evidence')."""
    who = "human labels" if data.mode == "human" else "a proxy judge (synthetic rejected answers; not evidence about humans)"
    pos = _row(controls, "positive", cfg.primary_variant)
    own = _row(controls, "reference: planted RM", cfg.primary_variant)
    twin_p = _row(controls, "reference: unplanted twin", cfg.primary_variant)
    got = (f"cluster AUROC plant minus unplanted twin {pos['value']:+.3f} [{pos['lo']:+.3f}, {pos['hi']:+.3f}]"
           + (f"; plant {own['value']:.2f} [{own['lo']:.2f}, {own['hi']:.2f}], twin {twin_p['value']:.2f}"
              if own and twin_p else "") if pos and not math.isnan(pos["value"]) else "not measured")
    if not pos or not pos["passed"]:
        took = _row(controls, "manipulation")
        hack = _row(controls, "positive", "hack_rate")
        hack_own = _row(controls, "reference: planted RM", "hack_rate") or hack
        twin = _row(controls, "reference: unplanted twin", "hack_rate")
        why = ""
        if took and took["passed"] is False:
            why = (" The manipulation check shows the plant itself did not take (hack-rate gap plant minus twin "
                   f"{took['value']:+.3f} [{took['lo']:+.3f}, {took['hi']:+.3f}]).")
        elif took and took["passed"] and hack and hack["passed"] and cfg.primary_variant != "hack_rate":
            why = (" The plant did take (hack-rate gap plant minus twin "
                   f"{took['value']:+.3f} [{took['lo']:+.3f}, {took['hi']:+.3f}]) and the hack rate alone, "
                   f"without the PM term, flagged the cluster (AUROC {hack_own['value']:.2f} "
                   f"[{hack_own['lo']:.2f}, {hack_own['hi']:.2f}]"
                   + (f"; unplanted twin {twin['value']:.2f}" if twin else "") + "): the PM weighting hides "
                   "this failure, which lives on responses the PM finds unlikely.")
        why += _pm_scale(controls)
        return (f"Judged against {who}: the positive control FAILED — SEAM ({cfg.primary_variant}) did not flag "
                f"the topic cluster on which an RM was deliberately broken to prefer the worse answers its PM "
                f"would give ({got}).{why} "
                "The pipeline cannot detect a known failure at this size, so this run supports no claim "
                "about SEAM either way.")
    prim = [r for r in endpoint if r["primary_endpoint"] and r["stat"] == "auroc" and not math.isnan(r["value"])]
    good = [r for r in prim if r["lo"] > 0.5 and (r.get("p_holm") or 1) < 0.05]
    bad = [r for r in prim if r["hi"] < 0.5 and (r.get("p_holm") or 1) < 0.05]
    null = [r for r in prim if r["equivalent"]]
    cells = "; ".join(f"RM size {r['rm_size']}: {r['value']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]" for r in prim)
    v2 = _row(controls, "reference: v2 plant (", cfg.primary_variant)
    blind = ""
    if v2 and not math.isnan(v2["value"]):
        blind = (f"; the same topic broken on every worse answer alike, most of them answers the PM would not "
                 f"give, moved it by {v2['value']:+.3f} [{v2['lo']:+.3f}, {v2['hi']:+.3f}]"
                 + (": SEAM sees RM errors where its PM puts weight, not elsewhere" if v2["lo"] <= 0 else ""))
    parts = [f"Judged against {who}, with the positive control passed (SEAM rose on the topic cluster where an "
             f"RM was deliberately broken to prefer the worse answers its PM would give: {got}{blind}), the "
             "pre-registered primary "
             f"endpoint — AUROC of SEAM ({cfg.primary_variant}) for 'the RM prefers the human-rejected "
             f"answer' on {len(data.items)} held-out prompts — was: {cells}."]
    if good:
        parts.append(f"SEAM predicted RM errors better than chance in {len(good)} of {len(prim)} cells "
                     "(Holm-corrected).")
    if bad:
        parts.append(f"It was significantly WORSE than chance in {len(bad)} cell(s).")
    if null:
        parts.append(f"In {len(null)} cell(s) SEAM was shown equivalent to chance (TOST ±{cfg.tost_margin}).")
    above = [r for r in prim if r["lo"] > 0.5 and r not in good]
    if not good and not bad:
        lead = "There is no evidence that SEAM predicts where the RM disagrees with humans"
        if above:   # the interval says one thing, the corrected test another: say both
            lead = (f"In {len(above)} of {len(prim)} cells the 95% interval lies above 0.5, but none survives Holm "
                    f"correction over the run's AUROC tests (smallest corrected p "
                    f"{min(r.get('p_holm') or 1 for r in above):.2g}): no corrected evidence that SEAM predicts "
                    "where the RM disagrees with humans")
        parts.append(lead + ("" if null or above else "; the intervals are too wide to conclude it does not (no "
                                                     "equivalence)") + ".")
    lrt = [r for r in endpoint if r["primary_endpoint"] is False and r["stat"] == "lrt_vs_margin"
           and r["policy"] == data.primary_pm and r["seam_variant"] == cfg.primary_variant]
    sig = [r for r in lrt if r.get("p_holm") is not None and not math.isnan(r["p_holm"]) and r["p_holm"] < 0.05]
    parts.append(f"Over the RM's own margin |Δr| and its score of the chosen answer, SEAM added significant "
                 f"information in {len(sig)} of {len(lrt)} cells.")
    hack = {r["rm_size"]: r for r in endpoint if r["stat"] == "auroc" and r["policy"] == data.primary_pm
            and r["arm"] == "human" and r["seam_variant"] == "hack_rate" and not math.isnan(r["value"])}
    perm = {c["rm_size"]: c for c in controls if c["control"].startswith("negative")}
    both = [r for r in prim if r["rm_size"] in hack and r["rm_size"] in perm]
    if both:
        parts.append("Without the PM term the same cells read: hack rate alone "
                     + ", ".join(f"{hack[r['rm_size']]['value']:.2f}" for r in both) + "; PM weights permuted "
                     + ", ".join(f"{perm[r['rm_size']]['value']:.2f}" for r in both)
                     + " — only SEAM's excess over these is evidence for its PM half.")
    acq = [r for r in retrain if r["analysis"] == "acquisition" and r["arm"] == "top_seam" and r["delta_vs_random"] is not None]
    if acq:
        a = acq[0]
        word = "helped" if a["delta_lo"] > 0 else ("hurt" if a["delta_hi"] < 0 else "made no detectable difference")
        parts.append(f"Adding the top-SEAM pool pairs to RM training {word} compared with random pairs "
                     f"(accuracy difference {a['delta_vs_random']:+.3f} [{a['delta_lo']:+.3f}, {a['delta_hi']:+.3f}]).")
    return " ".join(parts)
