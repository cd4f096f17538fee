"""The pre-registered study's data, loaded once: items, splits, probes and the scores the analyses read.

`Item`s are (prompt, human-chosen, human-rejected) pairs. Splits are fixed by a hash of the prompt
(A: RM training, B: selection / acquisition pool, C: evaluation), so an item's split never depends on
which other items were loaded. `EvidenceData` is what every analysis module's pure `compute(data, cfg)`
reads: per RM the margin r(chosen) - r(rejected) on C, and per (PM, RM, SEAM variant) the SEAM of each
C item as computed by the SQL macro `seam_variants` (the one definition).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Item:
    item_id: str
    prompt: str
    chosen: str
    rejected: str
    label_source: str = "dataset"    # dataset | hand | proxy


def prompt_hash(prompt: str, seed: int = 0) -> float:
    """Uniform in [0, 1) from the prompt text alone (and the study seed)."""
    h = hashlib.sha1(f"{seed}\x00{prompt}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_items(items: list[Item], sizes: dict[str, int], seed: int = 0) -> dict[str, list[Item]]:
    """A / B / C by prompt hash: items ordered by hash fill A, then B, then C (one item per prompt)."""
    seen, uniq = set(), []
    for it in items:
        if it.prompt not in seen:
            seen.add(it.prompt)
            uniq.append(it)
    order = sorted(uniq, key=lambda it: (prompt_hash(it.prompt, seed), it.item_id))
    out, start = {}, 0
    for name in ("A", "B", "C"):
        out[name] = order[start:start + sizes[name]]
        start += sizes[name]
    return out


@dataclass(frozen=True)
class RM:
    ref: str
    size: int
    seed: int
    arm: str = "human"          # human | human+synthetic | planted | planted_twin


@dataclass(frozen=True)
class EvidenceData:
    """What the analyses read (C items only; all values plain floats)."""

    mode: str                                        # human | proxy judge
    items: list[str]                                 # C item ids
    policies: list[str]                              # PMs, primary first
    rms: list[RM]
    margin: dict[str, dict[str, float]]              # RM ref -> item -> r(chosen) - r(rejected)
    seam: dict[tuple[str, str, str], dict[str, float]]   # (policy, RM ref, variant) -> item -> SEAM ('all' probes)
    cluster: dict[str, int] = field(default_factory=dict)
    planted_cluster: int | None = None
    retrain: list[dict] = field(default_factory=list)    # {analysis, arm, q, seed, item, correct}
    gold_score: dict[str, dict[str, float]] = field(default_factory=dict)   # RM ref -> item -> r(chosen)

    @property
    def primary_pm(self) -> str:
        return self.policies[0]

    def cell_rms(self, size: int, arm: str = "human") -> list[RM]:
        return [r for r in self.rms if r.size == size and r.arm == arm]

    @property
    def sizes(self) -> list[int]:
        return sorted({r.size for r in self.rms if r.arm == "human"})

    def event(self, rm: str) -> np.ndarray:
        """E = 1[the RM scores the human-rejected answer >= the human-chosen one], per C item."""
        return np.array([float(self.margin[rm][i] <= 0) for i in self.items])

    def abs_margin(self, rm: str) -> np.ndarray:
        return np.array([abs(self.margin[rm][i]) for i in self.items])

    def chosen_score(self, rm: str) -> np.ndarray:
        """r(chosen) per C item (NaN where not stored): the reference every hacking indicator compares with."""
        table = self.gold_score.get(rm, {})
        return np.array([table.get(i, math.nan) for i in self.items], float)

    def disagreement(self, size: int, arm: str = "human") -> np.ndarray:
        """RM-ensemble disagreement per item: SD of the margins of the cell's seeds."""
        m = np.array([[self.margin[r.ref][i] for i in self.items] for r in self.cell_rms(size, arm)])
        return m.std(axis=0) if len(m) > 1 else np.zeros(len(self.items))

    def seam_values(self, policy: str, rm: str, variant: str) -> np.ndarray:
        """SEAM per C item; an item without probes is NaN, log-space -inf (no hack) stays -inf (lowest rank)."""
        table = self.seam.get((policy, rm, variant), {})
        return np.array([table.get(i, math.nan) for i in self.items], float)
