"""`seam train-pm`: a few steps of supervised fine-tuning (SFT) of a policy model on gold answers.

Why: the paper's PM axis is a series of SFT checkpoints of one base model (0 ... 10,000 steps). In
miniature we fine-tune SmolLM2-135M-Instruct for a few dozen steps on human-written gold answers, which
is enough to move its style toward the data (and its gold-judged quality) and gives a third PM next to
the instruct model itself and Gemma-3-270M base.

What it does: full fine-tuning (all weights, AdamW, fp32 on CPU / bf16 autocast on GPU), loss on the
response tokens only. Prompts are formatted and responses closed with EOS exactly the way the PM scorer
does it (`analysis.models.policy.format_prompt` / `encode_prompt` / `encode_response`), so the log-probs the
pipeline later computes are the ones the model was trained to raise. The result is saved atomically as
an ordinary transformers checkpoint (safetensors + tokenizer + `seam_pm.json` training card), usable as
`--policy DIR` anywhere.

LoRA is not offered: it needs `peft` (not a dependency) and a 135M model fine-tunes fully in seconds
per step on a CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Sequence

from analysis.models.configs import PMTrainConfig

CARD_NAME = "seam_pm.json"


def load_examples(source: str, *, fmt: str = "auto", columns: str | None = None, split: str = "train",
                  exclude: set[str] | None = None) -> list[tuple[str, str]]:
    """(prompt, gold answer) pairs from any dataset the pipeline ingests (the chosen answer for
    preference data). `exclude`: sample ids to leave out (e.g. the prompts an experiment analyses)."""
    from analysis.data.ingest import ColumnMap, Sample, open_records, parse_records

    cmap = ColumnMap.parse(columns) if columns else None
    out = []
    for item in parse_records(open_records(source, split=split), dataset=source, fmt=fmt, columns=cmap):
        if isinstance(item, Sample) and (not exclude or item.sample_id not in exclude):
            out.append((item.prompt, item.gold))
    return out


def _encode(tokenizer, eos_id: int, prompt: str, answer: str, max_length: int) -> tuple[list[int], int]:
    from analysis.models.policy import encode_prompt, encode_response, format_prompt, truncate_prompt

    p = encode_prompt(tokenizer, format_prompt(tokenizer, prompt))
    r = encode_response(tokenizer, answer, eos_id)[: max_length - 1]
    p, _ = truncate_prompt(p, len(r), max_length, tokenizer.bos_token_id)
    return p + r, len(p)


def train_policy_model(examples: Sequence[tuple[str, str]], out_dir: Path | str, config: PMTrainConfig,
                       progress: bool = True) -> dict:
    """Fine-tune `config.base` on (prompt, answer) examples for `config.steps` steps; save to `out_dir`.

    Batches are drawn in a seeded order (reshuffled each pass over the data), so the same config and
    examples give the same checkpoint on the same machine. Returns the report also written to
    `out_dir/seam_pm.json` (loss curve, token counts, timings, config, base model digest).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from analysis.models.devices import pick_device
    from analysis.models.resolve import finish_model_dir, default_models_dir, resolve_model, weights_sha256
    from analysis.models.policy import eos_token_id

    t0 = time.perf_counter()
    if not examples:
        raise ValueError("train-pm needs at least one (prompt, answer) example")
    if config.steps < 0 or config.batch_size < 1:
        raise ValueError("steps must be >= 0 and batch_size >= 1")
    out_dir = Path(out_dir)
    models_dir = Path(config.models_dir) if config.models_dir else default_models_dir()
    resolved = resolve_model(config.base, models_dir)
    device = pick_device(config.device)
    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_id = eos_token_id(tokenizer, model)

    examples = list(examples)
    if config.max_examples is not None:
        examples = examples[: config.max_examples]
    encoded = [_encode(tokenizer, eos_id, p, a, config.max_length) for p, a in examples]
    rng = random.Random(config.seed)
    order: list[int] = []

    def next_batch() -> list[int]:
        nonlocal order
        if len(order) < config.batch_size:
            fresh = list(range(len(encoded)))
            rng.shuffle(fresh)
            order = order + fresh
        b, order = order[: config.batch_size], order[config.batch_size:]
        return b

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                            weight_decay=config.weight_decay)

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / (config.warmup_steps + 1)
        return config.lr

    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    curve: list[float] = []
    n_tokens = 0
    steps = range(config.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="PM SFT", unit="step")
    model.train()
    for step in steps:
        batch = [encoded[i] for i in next_batch()]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            labels[row, n_prompt: len(ids)] = torch.tensor(ids[n_prompt:])
            n_tokens += len(ids) - n_prompt
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with autocast:
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
        loss = out.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        opt.step()
        curve.append(round(loss.item(), 5))
        if progress and hasattr(steps, "set_postfix"):
            steps.set_postfix(loss=f"{curve[-1]:.3f}")
    model.eval()
    seconds_train = time.perf_counter() - t0

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        for extra in ("NOTICE", "LICENSE"):
            if (Path(resolved) / extra).is_file():
                shutil.copy(Path(resolved) / extra, tmp / extra)
        base_sha = None
        if Path(resolved).is_dir():
            try:
                base_sha = weights_sha256(resolved)
            except FileNotFoundError:
                pass
        first = curve[: max(1, len(curve) // 5)]
        last = curve[-max(1, len(curve) // 5):]
        report = {
            "format": "seam-pm/1",
            "kind": "full supervised fine-tuning on gold answers (response tokens only)",
            "base": config.base,
            "base_resolved": str(resolved),
            "base_weights_sha256": base_sha,
            "n_examples": len(encoded),
            "steps": config.steps,
            "response_tokens_seen": n_tokens,
            "loss_curve": curve,
            "loss_first": round(sum(first) / len(first), 5) if curve else None,
            "loss_last": round(sum(last) / len(last), 5) if curve else None,
            "device": str(device),
            "seconds": round(time.perf_counter() - t0, 2),
            "seconds_train": round(seconds_train, 2),
            "config": dataclasses.asdict(config),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        finish_model_dir(tmp, out_dir, CARD_NAME, report)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if any(math.isnan(x) for x in curve):
        raise FloatingPointError(f"PM SFT diverged (NaN loss); checkpoint kept at {out_dir} for inspection")
    return report


def read_card(pm_dir: Path | str) -> dict | None:
    """The seam_pm.json card of a checkpoint made by `train_policy_model`, or None."""
    path = Path(pm_dir) / CARD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------- CLI
