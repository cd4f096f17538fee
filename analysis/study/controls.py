"""Controls of the pre-registered study.

Negative: SEAM with the PM's log-probs permuted across the C probes (policy '<pm>~perm'): whatever
AUROC it keeps comes from the RM term alone; the PM's contribution is real minus permuted.
Positive: an RM trained with the labels flipped on one topic cluster of A; SEAM of that RM must flag the
planted cluster on C (AUROC for 'item in the planted cluster', interval's lower end above 0.5). If it
does not, the pipeline cannot detect a known failure, and the study claims nothing else.
"""

from __future__ import annotations

import numpy as np

from analysis.study.endpoint import cell_auroc
from analysis.study.evidence_data import EvidenceData

PERM = "~perm"


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
    if planted and data.planted_cluster is not None:
        y = np.array([float(data.cluster.get(i) == data.planted_cluster) for i in data.items])
        for var in (v, "hack_rate"):
            a = cell_auroc([data.seam_values(pm, r.ref, var) for r in planted], [y] * len(planted),
                           cfg.n_resamples, cfg.seed)
            passed = bool(not np.isnan(a["lo"]) and a["lo"] > 0.5)
            rows.append(dict(control="positive: flags the planted cluster", policy=pm, rm_size=planted[0].size,
                             seam_variant=var, value=a["value"], lo=a["lo"], hi=a["hi"], n=len(y),
                             positives=int(y.sum()), passed=passed,
                             note=f"RM trained with labels flipped on cluster {data.planted_cluster}; "
                                  f"mean over {len(planted)} seeds"))
    return {"study_controls": rows}
