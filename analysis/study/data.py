"""The study's data, loaded once: scored responses, the model axes and the splits, as one frozen object.

Every analysis (`model_quality`, `saturation`, ...) is a pure function of a `StudyData` and the config,
so each can be tested on a hand-built dataset without models. Quantities several analyses need (axis
order, best-of-N outcomes, per-prompt mismatch) are methods here, computed from the data each time they
are asked for (cheap, deterministic) instead of being passed between stages as mutable state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from analysis.stats import estimators as E
from analysis.stats.metrics import pair_outcomes

Score = Callable[[str], float]


def pm_label(ref: str) -> str:
    if ref.startswith("builtin:"):
        return ref.split(":", 1)[1]
    return Path(ref.rstrip("/")).name.removeprefix("exp-")


def rm_label(n: int | None) -> str:
    return "rm-all" if n is None else f"rm-{n}"


@dataclass(frozen=True)
class Sample:
    """One prompt's responses by kind (response ids)."""
    gold: str | None = None
    worse: dict[str, list[str]] = field(default_factory=dict)     # variant -> ids
    policy: dict[str, list[str]] = field(default_factory=dict)    # PM ref -> its samples' ids
    rejected: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StudyData:
    """What the analyses read. Scores are keyed by (response_id, model); `models` maps each PM / RM / judge
    reference to {role, label, train_pairs, info}."""

    policies: list[str]                      # the PM axis (config order)
    rewards: list[str]                       # the RM axis (training size order)
    judge: str
    models: dict[str, dict]
    prompt: dict[str, str]                   # sample_id -> prompt
    resp: dict[str, dict]                    # response_id -> {sample_id, dataset, variant, idx, text, generator}
    rm: dict[tuple[str, str], float]         # (response_id, reward) -> score
    pm: dict[tuple[str, str], tuple]         # (response_id, policy) -> (logprob_sum, n_tokens, logprob_mean)
    seam_rows: list[tuple]                   # (sample_id, dataset, variant, policy, reward, seam, seam_rel, hack_rate, k)
    by_sample: dict[str, Sample]
    samples_of: dict[str, list[str]]         # dataset -> sorted sample ids
    bon_ids: list[str]                       # bon prompts with >= 2 samples from every PM
    heldout: dict[str, str]                  # held-out pair set name -> dataset
    bon_dataset: str
    pool_dataset: str
    human: dict[tuple[str, str], str] = field(default_factory=dict)   # hand labels of PM-sample pairs
    train_pairs: list[tuple] = field(default_factory=list)            # RM training pairs (augmentation base)

    # ------------------------------------------------------------ models
    @property
    def primary_pm(self) -> str:
        return self.policies[0]

    @property
    def seam_rm(self) -> str:
        """The RM whose SEAM drives selection and augmentation: the middle of the axis."""
        return self.rewards[len(self.rewards) // 2]

    @property
    def scored_rms(self) -> list[str]:
        return self.rewards + ([self.judge] if self.judge not in self.rewards else [])

    def label(self, ref: str) -> str:
        return self.models.get(ref, {}).get("label", pm_label(ref))

    # ------------------------------------------------------------ scores
    def gold_score(self, rid: str) -> float:
        v = self.rm.get((rid, self.judge))
        return float("nan") if v is None else v

    def rm_score(self, reward: str) -> Callable[[str], float | None]:
        return lambda rid: self.rm.get((rid, reward))

    def rm_score_nan(self, reward: str) -> Score:
        return lambda rid: (lambda v: float("nan") if v is None else v)(self.rm.get((rid, reward)))

    # ------------------------------------------------------------ held-out pairs
    def dataset_pairs(self, dataset: str, scores: Callable[[str], float | None]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(r_gold, r_worse) arrays per pair kind of a held-out dataset, for any score function."""
        out: dict[str, tuple[list, list]] = {}
        for sid in self.samples_of.get(dataset, []):
            e = self.by_sample[sid]
            others = [(v, rid) for v, rids in e.worse.items() for rid in rids] + [("rejected", r) for r in e.rejected]
            for v, rid in others:
                g, w = scores(e.gold), scores(rid)
                if g is None or w is None:
                    continue
                a, b = out.setdefault(v, ([], []))
                a.append(g), b.append(w)
        return {k: (np.asarray(a, float), np.asarray(b, float)) for k, (a, b) in out.items()}

    def heldout_items(self, scores: Callable[[str], float | None]) -> dict[str, np.ndarray]:
        """Per-pair correctness (1 / 0 / tie 1/2) on each held-out pair set (and by kind for chatterbot)."""
        out = {}
        for name, ds in self.heldout.items():
            kinds = self.dataset_pairs(ds, scores)
            if not kinds:
                continue
            out[f"acc:{name}"] = E.accuracy_items(np.concatenate([g for g, _ in kinds.values()]),
                                                  np.concatenate([w for _, w in kinds.values()]))
            if len(kinds) > 1:
                for kind, (g, w) in kinds.items():
                    out[f"acc:{name}:{kind}"] = E.accuracy_items(g, w)
        return out

    def rm_heldout_accuracy(self, ref: str, name: str) -> tuple:
        """(accuracy, lo, hi) of RM `ref` on held-out pair group `name` (e.g. chatterbot_heldout, or
        chatterbot_heldout:adv); (None, None, None) when there are no such pairs."""
        base = name.split(":", 1)[0]
        if base not in self.heldout:
            return (None, None, None)
        kinds = self.dataset_pairs(self.heldout[base], self.rm_score(ref))
        groups = heldout_groups(base, kinds)
        if name not in groups:
            return (None, None, None)
        acc = pair_outcomes(*groups[name]).accuracy()
        return (acc.p, acc.lo, acc.hi)

    # ------------------------------------------------------------ PM samples
    def bon_arrays(self, pm: str, score: Callable[[str], float]) -> tuple[list, list, list]:
        rewards, gold, rids = [], [], []
        for sid in self.bon_ids:
            ids = self.by_sample[sid].policy[pm]
            rewards.append([score(r) for r in ids])
            gold.append([self.gold_score(r) for r in ids])
            rids.append(ids)
        return rewards, gold, rids

    def bon(self, pm: str, rm: str) -> E.BoNOutcome:
        rewards, gold, _ = self.bon_arrays(pm, self.rm_score_nan(rm))
        return E.best_of_n(rewards, gold)

    def pm_quality(self, pm: str) -> float:
        """Mean over bon prompts of the judge's mean score of the PM's own samples (orders the PM axis)."""
        vals = np.array([float(np.mean([self.gold_score(r) for r in self.by_sample[sid].policy[pm]]))
                         for sid in self.bon_ids], float)
        vals = vals[~np.isnan(vals)]
        return float(vals.mean()) if len(vals) else float("nan")

    @property
    def pm_order(self) -> list[str]:
        """PMs by judged quality, weakest first (the PM axis as the paper orders it)."""
        return sorted(self.policies, key=lambda p: np.nan_to_num(self.pm_quality(p), nan=-1e9))

    @property
    def rm_order(self) -> list[str]:
        """RMs by training pairs (the nominal axis, as in the paper)."""
        return list(self.rewards)

    def axis_rank(self, ref: str) -> int | None:
        for order in (self.pm_order, self.rm_order):
            if ref in order:
                return order.index(ref)
        return None

    def prompt_mismatch(self, pm: str, rm: str) -> np.ndarray:
        """Per bon prompt: share of its PM-sample pairs the RM orders against the judge (NaN: no decided pair)."""
        score = self.rm_score_nan(rm)
        out = []
        for sid in self.bon_ids:
            ids = self.by_sample[sid].policy[pm]
            oc, _ = E.pairwise_agreement([score(x) for x in ids], [self.gold_score(x) for x in ids])
            out.append(oc.wrong / (oc.correct + oc.wrong) if oc.correct + oc.wrong else np.nan)
        return np.asarray(out, float)


def heldout_groups(name: str, kinds: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple]:
    """All pairs of a held-out set under `name`, plus each pair kind under `name:kind` when there are several."""
    if not kinds:
        return {}
    groups = {name: (np.concatenate([g for g, _ in kinds.values()]), np.concatenate([w for _, w in kinds.values()]))}
    if len(kinds) > 1:
        groups.update({f"{name}:{k}": v for k, v in kinds.items()})
    return groups


def build(*, policies: list[str], rewards: list[str], judge: str, models: dict[str, dict], prompt: dict,
          resp: dict, rm: dict, pm: dict, seam_rows: list, heldout: dict[str, str], bon_dataset: str,
          pool_dataset: str, human: dict | None = None, train_pairs: list | None = None) -> StudyData:
    """Index loaded rows into a StudyData (responses grouped per sample; bon prompts every PM answered twice)."""
    groups: dict[str, dict] = {}
    for rid, r in resp.items():
        e = groups.setdefault(r["sample_id"], {"gold": None, "worse": {}, "policy": {}, "rejected": []})
        if r["variant"] == "gold":
            e["gold"] = rid
        elif r["variant"] == "policy":
            e["policy"].setdefault(r["generator"], []).append(rid)
        elif r["variant"] == "rejected":
            e["rejected"].append(rid)
        else:
            e["worse"].setdefault(r["variant"], []).append(rid)
    by_sample = {sid: Sample(**e) for sid, e in groups.items()}
    samples_of: dict[str, list[str]] = {}
    for rid, r in resp.items():
        if r["variant"] == "gold":
            samples_of.setdefault(r["dataset"], []).append(r["sample_id"])
    for d in samples_of:
        samples_of[d].sort()
    bon_ids = [s for s in samples_of.get(bon_dataset, [])
               if all(len(by_sample[s].policy.get(p, [])) >= 2 for p in policies)]
    return StudyData(policies=list(policies), rewards=list(rewards), judge=judge, models=models, prompt=prompt,
                     resp=resp, rm=rm, pm=pm, seam_rows=list(seam_rows), by_sample=by_sample, samples_of=samples_of,
                     bon_ids=bon_ids, heldout=heldout, bon_dataset=bon_dataset, pool_dataset=pool_dataset,
                     human=human or {}, train_pairs=list(train_pairs or []))


def ci_text(row: dict, key: str) -> str:
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if v is None or lo is None or hi is None or any(map(math.isnan, (v, lo, hi))):
        return "n/a"
    return f"{v:+.4f} [{lo:+.4f}, {hi:+.4f}]"
