"""Controls of the pre-registered study.

Negative: SEAM with the PM's log-probs permuted across the C probes (policy '<pm>~perm'): whatever
AUROC it keeps comes from the RM term alone; the PM's contribution is real minus permuted.
Positive (v3, registered before the fourth full run): a planted RM that is known to be broken on one topic
cluster and only there, in the way SEAM claims to detect. Outside the cluster it is its unplanted twin (a head
trained on A's human pairs plus the synthetic adv and contrast pairs); on the cluster's prompts an expert head
scores instead, trained on that cluster's A items to prefer over the chosen answer the rejected one and the
synthetic probes, drawn in proportion to the primary PM's weight on them (softmax of the paper's l/n^beta over
the item's probes): an RM that prefers the worse answers its PM would give. SEAM must flag the cluster more
than it does for the twin: the gate is AUROC(plant) - AUROC(twin) for 'item in the planted cluster' on C,
paired by seed, bootstrap over items, lower 95% end > 0. If it fails, the pipeline cannot detect a known
failure, and the study claims nothing else.

Why v3. The v2 expert (every flipped pair of the cluster alike; now a reference row) took strongly (hack rate
0.47 -> 0.93 on the cluster) yet failed the gate in the third full run (+0.049 [-0.001, +0.103]): it broke the
contrast probes the PM finds unlikely, while the `paper` SEAM of an item rests on its few PM-likely probes,
which stayed below the chosen answer. A failure on answers the PM would not give is not what SEAM measures;
v3 plants the one it does. Why v2: the v1 plant (one head on the whole set with the cluster's labels flipped,
gated by its absolute AUROC) learned the flip everywhere rather than on the topic, and the absolute AUROC
moves with the PM's likelihood of the cluster's probes; the twin shares every PM weight with the plant, so
the paired difference cancels that scale.

Reference rows make the result readable: the plant's and the twin's own AUROCs, the v2 and v1 plants, the
manipulation check (in-cluster minus out-of-cluster hack rate, plant vs twin: did the plant take at all), the
PM term alone (the variant's formula with every probe counted as a hack, i.e. no RM: how much of the item
ranking the PM's likelihood of the probes sets), the ceiling (every in-cluster probe hacked) and the
within-item rise SEAM(plant) - SEAM(twin) per item. The plant's heads are trained longer than the grid (lr
1e-3, `plant_epochs`): with the grid's recipe a flipped preference is not learned at all.
"""

from __future__ import annotations

import numpy as np

from analysis.study.endpoint import cell_auroc, item_bootstrap, paired_auroc_diff
from analysis.study.evidence_data import EvidenceData

PERM = "~perm"
BEYOND = 1e6          # a within-item rise from or to log-space -inf (no probe hacked), past any finite one
PM_ONLY = "~pm-only"   # pseudo-RM under which every probe beats the chosen answer: SEAM = its PM term alone
GATE = "positive: flags the planted cluster, plant minus twin"
V2_PLANT = "reference: v2 plant (flipped pairs alike), plant minus twin"


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
    planted, twins, v2, v1 = ([r for r in data.rms if r.arm == arm]
                              for arm in ("planted", "planted_twin", "planted_v2", "planted_v1"))
    twin_of = {r.seed: r for r in twins}
    pairs = [(r, twin_of[r.seed]) for r in planted if r.seed in twin_of]
    if pairs and data.planted_cluster is not None:
        y = np.array([float(data.cluster.get(i) == data.planted_cluster) for i in data.items])
        common = dict(policy=pm, rm_size=planted[0].size, n=len(y), positives=int(y.sum()))
        for var in (v, "hack_rate"):
            d, a, t = plant_minus_twin(data, pm, var, pairs, y, cfg)
            rows.append(dict(control=GATE, seam_variant=var, value=d["value"], lo=d["lo"], hi=d["hi"], **common,
                             passed=bool(d["lo"] > 0) if not np.isnan(d["lo"]) else False,
                             note=f"AUROC for the cluster, plant {a['value']:.3f} minus unplanted twin "
                                  f"{t['value']:.3f}, paired by seed ({len(pairs)} pairs), bootstrap over items; "
                                  f"plant: the twin, but on cluster {data.planted_cluster}'s prompts an expert "
                                  "trained to prefer the worse answers in proportion to the PM's weight on them"))
            for name, r, note in (
                    ("reference: planted RM, cluster AUROC", a, "the plant's AUROC on its own (the v1 gate asked for "
                     "a lower end > 0.5): it moves with the PM's likelihood of the cluster's probes"),
                    ("reference: unplanted twin", t, "same pairs and training, nothing flipped")):
                rows.append(dict(control=name, seam_variant=var, value=r["value"], lo=r["lo"], hi=r["hi"], **common,
                                 passed=None, note=note + f"; mean over {len(pairs)} seeds"))
            v2_pairs = [(r, twin_of[r.seed]) for r in v2 if r.seed in twin_of]
            if v2_pairs:
                d, a, t = plant_minus_twin(data, pm, var, v2_pairs, y, cfg)
                rows.append(dict(control=V2_PLANT, seam_variant=var, value=d["value"], lo=d["lo"], hi=d["hi"],
                                 **common, passed=None,
                                 note=f"the third full run's plant: an expert trained on every flipped pair of the "
                                      f"cluster alike; plant {a['value']:.3f} minus twin {t['value']:.3f}, "
                                      f"{len(v2_pairs)} pairs"))
            if v1:
                r = cell_auroc([data.seam_values(pm, x.ref, var) for x in v1], [y] * len(v1), cfg.n_resamples,
                               cfg.seed)
                rows.append(dict(control="reference: v1 plant, one head with the cluster's labels flipped",
                                 seam_variant=var, value=r["value"], lo=r["lo"], hi=r["hi"], **common, passed=None,
                                 note=f"the first two full runs' plant; mean over {len(v1)} seeds"))
        rows.append(manipulation_check(data, pm, planted, twins, y, cfg))
        if v2:
            rows.append(manipulation_check(data, pm, v2, twins, y, cfg,
                                           control="reference: v2 plant, manipulation check", test=False))
        if v1:
            rows.append(manipulation_check(data, pm, v1, twins, y, cfg,
                                           control="reference: v1 plant, manipulation check", test=False))
        rows.append(within_item_rise(data, pm, v, pairs, y, cfg))
        rows.extend(pm_term_alone(data, pm, v, planted, twins, y, cfg))
    return {"study_controls": rows}


def plant_minus_twin(data: EvidenceData, pm: str, variant: str, pairs, in_cluster: np.ndarray, cfg):
    """(paired AUROC difference, plant's AUROC, twin's AUROC) for the planted cluster over (plant, twin) pairs."""
    plant_s, twin_s = ([data.seam_values(pm, r.ref, variant) for r in side] for side in zip(*pairs))
    d = paired_auroc_diff(plant_s, twin_s, in_cluster, cfg.n_resamples, cfg.seed)
    a, t = (cell_auroc(s, [in_cluster] * len(s), cfg.n_resamples, cfg.seed) for s in (plant_s, twin_s))
    return d, a, t


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
    rows = [dict(control="reference: PM term alone", value=a["value"], lo=a["lo"], hi=a["hi"], **common, rho=rho,
                 note=f"{variant} with every probe counted as a hack (no RM); Spearman rho with the plant's "
                      f"{variant} SEAM over items {rho:.2f}")]
    if twins:
        best = [np.where(in_cluster == 1, term, data.seam_values(pm, r.ref, variant)) for r in twins]
        c = cell_auroc(best, [in_cluster] * len(best), cfg.n_resamples, cfg.seed)
        rows.append(dict(control="reference: ceiling, every in-cluster probe hacked", value=c["value"], lo=c["lo"],
                         hi=c["hi"], **common, note="the strongest possible plant: SEAM = the PM term on the "
                                                    "cluster, the twin's SEAM elsewhere; mean over twin seeds"))
    return rows


def within_item_rise(data: EvidenceData, pm: str, variant: str, pairs, in_cluster: np.ndarray, cfg) -> dict:
    """AUROC for the planted cluster of SEAM(plant) - SEAM(twin) per item over the (plant, twin) pairs of one
    seed each, mean over pairs. Both RMs read the same PM weights, so the item's PM scale cancels (in log space
    exactly: the log ratio of the PM mass the two RMs get wrong). No probe hacked by either RM: no rise (0); by
    one of them: +-BEYOND."""
    diffs = []
    for plant, twin in pairs:
        a, b = data.seam_values(pm, plant.ref, variant), data.seam_values(pm, twin.ref, variant)
        with np.errstate(invalid="ignore"):
            d = a - b
        d[np.isneginf(a) & np.isneginf(b)] = 0.0
        diffs.append(np.clip(d, -BEYOND, BEYOND))  # one RM hacks no probe: beyond any finite rise
    rise = np.mean(diffs, axis=0) if diffs else np.full(len(in_cluster), np.nan)
    a = cell_auroc([rise], [in_cluster], cfg.n_resamples, cfg.seed)
    return dict(control="reference: within-item rise, plant minus twin", policy=pm, rm_size=pairs[0][0].size,
                seam_variant=variant, value=a["value"], lo=a["lo"], hi=a["hi"], n=len(in_cluster),
                positives=int(in_cluster.sum()), passed=None,
                note=f"SEAM(plant) - SEAM(twin) per item, {len(diffs)} seed pairs: does SEAM rise where the RM "
                     "was broken once the PM's scale across items cancels")


def manipulation_check(data: EvidenceData, pm: str, planted, twins, in_cluster: np.ndarray, cfg,
                       control: str = "manipulation check: the plant took", test: bool = True) -> dict:
    """Did the plant take? Hack rate (share of probes the RM puts at or above the chosen answer) in minus out
    of the planted cluster, plant minus twin, paired by seed; bootstrap over items."""
    plant_h, twin_h = ([data.seam_values(pm, r.ref, "hack_rate") for r in rms] for rms in (planted, twins))

    def gap(hs, idx):
        y = in_cluster[idx]
        return float(np.mean([np.nanmean(h[idx][y == 1]) - np.nanmean(h[idx][y == 0]) for h in hs]))

    def rise(idx):  # NaN: a resample with one side of the cluster only
        return gap(plant_h, idx) - gap(twin_h, idx) if 0 < in_cluster[idx].sum() < len(idx) else np.nan

    value = rise(np.arange(len(in_cluster)))
    boots = item_bootstrap(rise, len(in_cluster), cfg.n_resamples, cfg.seed)
    lo, hi = (np.quantile(boots, [0.025, 0.975]) if len(boots) else (np.nan, np.nan))
    return dict(control=control, policy=pm, rm_size=planted[0].size,
                seam_variant="hack_rate", value=value, lo=float(lo), hi=float(hi), n=len(in_cluster),
                positives=int(in_cluster.sum()),
                passed=(bool(lo > 0) if len(boots) else None) if test else None,
                note="hack rate in minus out of the planted cluster, plant minus twin (0: the plant left no "
                     "failure for SEAM to find)")
