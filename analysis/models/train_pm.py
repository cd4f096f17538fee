"""`seam train-pm`: a few steps of supervised fine-tuning (SFT) of a policy model on gold answers.

Why: the paper's PM axis is a series of SFT checkpoints of one base model (0 ... 10,000 steps). In
miniature we fine-tune SmolLM2-135M-Instruct for a few dozen steps on human-written gold answers, which
is enough to move its style toward the data (and its gold-judged quality) and gives a third PM next to
the instruct model itself and Gemma-3-270M base.

What it does: TRL's `SFTTrainer` (AdamW, constant learning rate after a linear warm-up, fp32 on CPU / bf16
on GPU), loss on the response tokens only; all weights by default, or PEFT LoRA adapters (`--lora`) merged
into the saved weights. Prompts are formatted and responses closed with EOS exactly the way the PM scorer
does it (`analysis.models.policy.format_prompt` / `encode_prompt` / `encode_response`), so the log-probs the
pipeline later computes are the ones the model was trained to raise. The result is saved atomically as
an ordinary transformers checkpoint (safetensors + tokenizer + `seam_pm.json` training card), usable as
`--policy DIR` anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
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

    TRL's `SFTTrainer` runs the loop on examples we tokenize ourselves (`input_ids` + `labels` with -100 on
    the prompt), so the trainer never re-applies a chat template or appends a second EOS: what it trains is
    token for token what the PM scorer later reads. Batches come from the trainer's seeded sampler, so the
    same config and examples give the same checkpoint on the same machine. Returns the report also written
    to `out_dir/seam_pm.json` (loss curve, token counts, timings, config, base model digest).
    """
    with contextlib.nullcontext() if progress else _quiet():
        return _train(examples, out_dir, config, progress)


@contextlib.contextmanager
def _quiet():
    """No loading, dataset-preparation or saving bars (`--quiet`); TRL's per-step log prints are removed in `_train`."""
    import datasets

    from analysis.models.reward import quiet_transformers

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with quiet_transformers():
            yield
    finally:
        if bars:
            datasets.enable_progress_bars()


def _train(examples, out_dir, config: PMTrainConfig, progress: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from analysis.models.devices import pick_device
    from analysis.models.resolve import finish_model_dir, default_models_dir, resolve_model, weights_sha256
    from analysis.models.policy import eos_token_id

    t0 = time.perf_counter()
    if not examples:
        raise ValueError("train-pm needs at least one (prompt, answer) example")
    if config.steps < 0 or config.batch_size < 1 or config.lora_r < 1:
        raise ValueError("steps must be >= 0, batch_size >= 1 and lora_r >= 1")
    out_dir = Path(out_dir)
    models_dir = Path(config.models_dir) if config.models_dir else default_models_dir()
    resolved = resolve_model(config.base, models_dir)
    device = pick_device(config.device)
    tokenizer = AutoTokenizer.from_pretrained(resolved)
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    eos_id = eos_token_id(tokenizer, model)

    examples = list(examples)[: config.max_examples]
    encoded = [_encode(tokenizer, eos_id, p, a, config.max_length) for p, a in examples]
    rows = [{"input_ids": ids, "labels": [-100] * n_prompt + ids[n_prompt:]} for ids, n_prompt in encoded]
    response_tokens = sum(len(ids) - n_prompt for ids, n_prompt in encoded)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    cuda = device.type == "cuda"
    args = SFTConfig(
        output_dir=str(tmp / "trl"), max_steps=config.steps, per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr, weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
        lr_scheduler_type="constant_with_warmup", max_grad_norm=config.max_grad_norm,
        max_length=config.max_length, seed=config.seed, data_seed=config.seed, logging_steps=1, report_to="none",
        save_strategy="no", use_cpu=not cuda, bf16=cuda and torch.cuda.is_bf16_supported(),
        activation_checkpointing=False, disable_tqdm=not progress)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=2 * config.lora_r, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    try:
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer, peft_config=peft_config)
        if not progress:
            trainer.remove_callback(PrinterCallback)  # it prints every step's log dict to stdout
        if config.steps:  # max_steps=0 would make the trainer fall back to whole epochs
            trainer.train()
        curve = [round(h["loss"], 5) for h in trainer.state.log_history if "loss" in h]
        model = trainer.model.merge_and_unload() if config.lora else trainer.model
        model.eval()
        seconds_train = time.perf_counter() - t0
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(tmp / "trl", ignore_errors=True)
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
            "format": "seam-pm/2",
            "kind": ("LoRA" if config.lora else "full") + " supervised fine-tuning on gold answers (response "
                    "tokens only; TRL SFTTrainer)",
            "base": config.base,
            "base_resolved": str(resolved),
            "base_weights_sha256": base_sha,
            "n_examples": len(encoded),
            "steps": config.steps,
            "response_tokens": response_tokens,
            "loss_curve": curve,
            "loss_first": round(sum(first) / len(first), 5) if curve else None,
            "loss_last": round(sum(last) / len(last), 5) if curve else None,
            "device": str(device),
            "seconds": round(time.perf_counter() - t0, 2),
            "seconds_train": round(seconds_train, 2),
            "config": dataclasses.asdict(config),
            "versions": {"trl": _version("trl"), "peft": _version("peft") if config.lora else None},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        finish_model_dir(tmp, out_dir, CARD_NAME, report)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if any(math.isnan(x) for x in curve):
        raise FloatingPointError(f"PM SFT diverged (NaN loss); checkpoint kept at {out_dir} for inspection")
    return report


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def read_card(pm_dir: Path | str) -> dict | None:
    """The seam_pm.json card of a checkpoint made by `train_policy_model`, or None."""
    path = Path(pm_dir) / CARD_NAME
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------------------------------------- CLI
