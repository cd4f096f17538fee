"""Controls of the pre-registered study.

Negative: SEAM with the PM's log-probs permuted across the C probes (policy '<pm>~perm'): whatever
AUROC it keeps comes from the RM term alone; the PM's contribution is real minus permuted.
Positive: an RM trained with every label flipped on one topic cluster of A (human pairs and the synthetic
pairs of the human+synthetic arm); SEAM of that RM must flag the planted cluster on C (AUROC for 'item in
the planted cluster', interval's lower end above 0.5). If it does not, the pipeline cannot detect a known
failure, and the study claims nothing else. Two reference rows make the result readable: the unplanted twin
(same pairs and training, nothing flipped) shows how much a cluster stands out anyway, and the manipulation
check (in-cluster minus out-of-cluster hack rate, plant vs twin) shows whether the plant took at all. Two more
reference rows (added after the first full run, whose primary missed the cluster while the hack rate found it)
say why a PM-weighted SEAM can miss it: the PM term alone (the variant's formula with every probe counted as a
hack, i.e. no RM: how much of the item ranking the PM's likelihood of the probes sets), the ceiling (the
strongest plant possible: every in-cluster probe hacked), and the within-item rise
(plant minus twin, paired by seed: both share the item's PM weights, so the PM's scale across items cancels). Why the
plant is trained longer than the grid: with the grid's recipe the flip is not learned (a near-linear head
on frozen features cannot make its within-prompt ranking depend on the topic), so a plant trained like the
grid leaves no failure to detect.
"""

from __future__ import annotations

import numpy as np

from analysis.study.endpoint import cell_auroc
from analysis.study.evidence_data import EvidenceData

PERM = "~perm"
BEYOND = 1e6          # a within-item rise from or to log-space -inf (no probe hacked), past any finite one
PM_ONLY = "~pm-only"   # pseudo-RM under which every probe beats the chosen answer: SEAM = its PM term alone


def compute(data: EvidenceData, cfg) -> dict[str, list[dict]]:
    rows, v, pm = [], cfg.primary_variant, data.primary_pm
    for size in data.sizes:
        cell = data.cell_rms(size)
        labels = [data.event(r.ref) for r in cell]
        real = cell_auroc([data.seam_values(pm, r.ref, v) for r in cell], labels, cfg.n_resamples, cfg.seed)
        perm = cell_auroc([data.seam_values(pm + PERM, r.ref, v) for r in cell], labels, cfg.n_resamples, cfg.seed)
        if np.isnan(perm["value"]):
            continue
        rows.append(dict(control="negative: permuted PM weights", policy=pm + PERM, rm_size=size, seam_variant=v,
                         value=perm["value"], lo=perm["lo"], hi=perm["hi"], n=len(data.items),
                         positives=int(np.mean([l.sum() for l in labels])),
                         passed=None, note=f"unpermuted: {real['value']:.3f}; the difference is the PM term's "
                                           "contribution"))
    planted = [r for r in data.rms if r.arm == "planted"]
    twins = [r for r in data.rms if r.arm == "planted_twin"]
    if planted and data.planted_cluster is not None:
        y = np.array([float(data.cluster.get(i) == data.planted_cluster) for i in data.items])
        for var in (v, "hack_rate"):
            for rms, is_plant in ((planted, True), (twins, False)):
                if not rms:
                    continue
                a = cell_auroc([data.seam_values(pm, r.ref, var) for r in rms], [y] * len(rms),
                               cfg.n_resamples, cfg.seed)
                passed = bool(not np.isnan(a["lo"]) and a["lo"] > 0.5) if is_plant else None
                rows.append(dict(
                    control="positive: flags the planted cluster" if is_plant else "reference: unplanted twin",
                    policy=pm, rm_size=rms[0].size, seam_variant=var, value=a["value"], lo=a["lo"], hi=a["hi"],
                    n=len(y), positives=int(y.sum()), passed=passed,
                    note=(f"RM trained with every label flipped on cluster {data.planted_cluster}"
                          if is_plant else "same pairs and training, nothing flipped")
                    + f"; mean over {len(rms)} seeds"))
        if twins:
            rows.append(manipulation_check(data, pm, planted, twins, y, cfg))
            rows.append(within_item_rise(data, pm, v, planted, twins, y, cfg))
        rows.extend(pm_term_alone(data, pm, v, planted, twins, y, cfg))
    return {"study_controls": rows}


def pm_term_alone(data: EvidenceData, pm: str, variant: str, planted, twins, in_cluster: np.ndarray,
                  cfg) -> list[dict]:
    """Two rows on the variant's PM term (its formula with every probe counted as a hack: no RM).

    'PM term alone': its AUROC for the planted cluster and its rank correlation with the plant's SEAM; near
    the plant's own AUROC with rho near 1, the PM's likelihood of each item's probes, not the RM failure,
    orders the items. 'ceiling': the strongest plant possible, every probe of every in-cluster item hacked
    (SEAM = the PM term there) while the other items keep the twin's SEAM; if even that stays near 0.5, no
    plant of any strength could pass the gate with this variant on these items.
    """
    from scipy.stats import spearmanr

    term = data.seam_values(pm, PM_ONLY, variant)
    if variant == "hack_rate" or np.isnan(term).all():
        return []
    common = dict(policy=pm, rm_size=planted[0].size, seam_variant=variant, n=len(in_cluster),
                  positives=int(in_cluster.sum()), passed=None)
    a = cell_auroc([term], [in_cluster], cfg.n_resamples, cfg.seed)
    plant = np.mean([data.seam_values(pm, r.ref, variant) for r in planted], axis=0)
    ok = ~np.isnan(term) & ~np.isnan(plant)
    rho = float(spearmanr(plant[ok], term[ok]).statistic) if ok.sum() > 2 else float("nan")
    rows = [dict(control="reference: PM term alone", value=a["value"], lo=a["lo"], hi=a["hi"], **common,
                 note=f"{variant} with every probe counted as a hack (no RM); Spearman rho with the plant's "
                      f"{variant} SEAM over items {rho:.2f}")]
    if twins:
        best = [np.where(in_cluster == 1, term, data.seam_values(pm, r.ref, variant)) for r in twins]
        c = cell_auroc(best, [in_cluster] * len(best), cfg.n_resamples, cfg.seed)
        rows.append(dict(control="reference: ceiling, every in-cluster probe hacked", value=c["value"], lo=c["lo"],
                         hi=c["hi"], **common, note="the strongest possible plant: SEAM = the PM term on the "
                                                    "cluster, the twin's SEAM elsewhere; mean over twin seeds"))
    return rows


def within_item_rise(data: EvidenceData, pm: str, variant: str, planted, twins, in_cluster: np.ndarray, cfg) -> dict:
    """AUROC for the planted cluster of SEAM(plant) - SEAM(twin) per item, paired by seed, mean over pairs.
    Both RMs read the same PM weights, so the item's PM scale cancels (in log space exactly: the log ratio of the
    PM mass the two RMs get wrong). No probe hacked by either RM: no rise (0); by one of them: +-BEYOND."""
    twin = {r.seed: r for r in twins}
    diffs = []
    for r in planted:
        if r.seed in twin:
            a, b = data.seam_values(pm, r.ref, variant), data.seam_values(pm, twin[r.seed].ref, variant)
            with np.errstate(invalid="ignore"):
                d = a - b
            d[np.isneginf(a) & np.isneginf(b)] = 0.0
            diffs.append(np.clip(d, -BEYOND, BEYOND))  # one RM hacks no probe: beyond any finite rise
    rise = np.mean(diffs, axis=0) if diffs else np.full(len(in_cluster), np.nan)
    a = cell_auroc([rise], [in_cluster], cfg.n_resamples, cfg.seed)
    return dict(control="reference: within-item rise, plant minus twin", policy=pm, rm_size=planted[0].size,
                seam_variant=variant, value=a["value"], lo=a["lo"], hi=a["hi"], n=len(in_cluster),
                positives=int(in_cluster.sum()), passed=None,
                note=f"SEAM(plant) - SEAM(twin) per item, {len(diffs)} seed pairs: does SEAM rise where the RM "
                     "was broken once the PM's scale across items cancels")


def manipulation_check(data: EvidenceData, pm: str, planted, twins, in_cluster: np.ndarray, cfg) -> dict:
    """Did the plant take? Hack rate (share of probes the RM puts at or above the chosen answer) in minus out
    of the planted cluster, plant minus twin, paired by seed; bootstrap over items."""
    plant_h, twin_h = ([data.seam_values(pm, r.ref, "hack_rate") for r in rms] for rms in (planted, twins))

    def gap(hs, idx):
        y = in_cluster[idx]
        return float(np.mean([np.nanmean(h[idx][y == 1]) - np.nanmean(h[idx][y == 0]) for h in hs]))

    everything = np.arange(len(in_cluster))
    value = gap(plant_h, everything) - gap(twin_h, everything)
    rng = np.random.default_rng(cfg.seed)
    boots = []
    for _ in range(cfg.n_resamples):
        idx = rng.integers(0, len(in_cluster), len(in_cluster))
        if 0 < in_cluster[idx].sum() < len(idx):
            boots.append(gap(plant_h, idx) - gap(twin_h, idx))
    lo, hi = (np.quantile(boots, [0.025, 0.975]) if boots else (np.nan, np.nan))
    return dict(control="manipulation check: the plant took", policy=pm, rm_size=planted[0].size,
                seam_variant="hack_rate", value=value, lo=float(lo), hi=float(hi), n=len(in_cluster),
                positives=int(in_cluster.sum()), passed=bool(lo > 0) if boots else None,
                note="hack rate in minus out of the planted cluster, plant minus twin (0: the plant left no "
                     "failure for SEAM to find)")
