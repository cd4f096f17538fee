"""Training configs of the models subpackage, kept free of torch so `seam --help` builds its flags fast.

Each dataclass generates its command's flags (`analysis.options`) and is recorded in full in the model
card of the checkpoint it produced.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.options import opt


@dataclass
class RMTrainConfig:
    """Knobs of `train_reward_model`; every field is recorded in the RM's seam_rm.json card.

    Defaults were picked on HH-RLHF harmless-base with the bundled MiniLM (4 random splits, 800
    held-out pairs): with lr=3e-4 the 148k-parameter pooler overfits (held-out BT loss rose above
    log 2 ≈ 0.693 at 500–1500 pairs while accuracy stalled); lr=1e-4 for 20 epochs kept held-out loss
    at ~0.68 with the best accuracy of the settings tried.
    """

    backbone: str | None = opt(None, "encoder to freeze (default: the bundled all-MiniLM-L6-v2)")
    max_pairs: int | None = opt(None, "training pairs used after the validation split (0 = untrained head; "
                                      "default: all)")
    epochs: int = opt(20, "training epochs")
    lr: float = opt(1e-4, "learning rate (3e-4 overfit the pooler on HH-RLHF)")
    batch_size: int = opt(32, "pairs per step")
    weight_decay: float = opt(0.1, "AdamW weight decay")
    val_fraction: float = opt(0.1, "share of pairs held out for validation")
    max_val_pairs: int = opt(1000, "cap on validation pairs (caps encoding cost on large sets)")
    seed: int = opt(0, "seed of the split and the head's initialisation")
    max_length: int = opt(256, "tokens per (prompt, response) input (MiniLM was trained on 256)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = opt("auto", "auto | float32 | bfloat16")
    train_pooler: bool = opt(True, "train the pretrained pooler too (else only the classifier)")
    feature_batch_size: int = opt(32, "inputs per frozen-encoder forward batch")


@dataclass
class PMTrainConfig:
    """Knobs of `train_policy_model`; every field is recorded in the checkpoint's seam_pm.json card."""

    base: str = opt("builtin:smollm2-135m-instruct", "PM to fine-tune (builtin:, dir, .gguf, hub id)")
    steps: int = opt(30, "optimizer steps")
    batch_size: int = opt(8, "examples per step")
    lr: float = opt(5e-5, "learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    warmup_steps: int = opt(3, "linear warm-up steps")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    max_length: int = opt(256, "prompt + response tokens; longer examples are left-truncated")
    max_examples: int | None = opt(None, "use at most this many examples")
    seed: int = opt(0, "seed")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    models_dir: str | None = opt(None, "where builtin: models are converted (default: cache/models)")
    lora: bool = opt(False, "train LoRA adapters (PEFT) instead of all weights, merged into the saved checkpoint "
                            "(adapters need a larger --lr, e.g. 1e-3)")
    lora_r: int = opt(16, "LoRA rank (alpha = 2 r, all linear layers)")
