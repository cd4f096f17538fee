"""`seam train-pm` on TRL's SFTTrainer: the checkpoint raises the log-prob the PM scorer reads for the
trained answers, is reproducible from its seed, and LoRA adapters come back merged into plain weights."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from analysis.models.configs import PMTrainConfig
from analysis.models.policy import PolicyConfig, PolicyModel
from analysis.models.train_pm import read_card, train_policy_model

MODELS = Path(os.environ.get("SEAM_MODELS_DIR", Path(__file__).resolve().parents[3] / "cache" / "models"))
EXAMPLES = [(f"Name a colour number {i}.", f"Teal {i} is my pick, zebra quartz.") for i in range(6)]


def _logprobs(ref) -> np.ndarray:
    pm = PolicyModel(str(ref), MODELS, PolicyConfig(device="cpu", dtype="float32"))
    return np.array([lp for lp, _ in pm.score([p for p, _ in EXAMPLES], [a for _, a in EXAMPLES], progress=False)])


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True])
def test_sft_raises_scored_logprob_and_is_seeded(tmp_path, lora):
    cfg = PMTrainConfig(steps=4, batch_size=3, lr=1e-3 if lora else 1e-4, warmup_steps=0, device="cpu",
                        models_dir=str(MODELS), lora=lora, lora_r=4)
    rep = train_policy_model(EXAMPLES, tmp_path / "a", cfg, progress=False)
    assert len(rep["loss_curve"]) == 4 and rep["config"]["lora"] is lora, rep
    assert read_card(tmp_path / "a")["loss_curve"] == rep["loss_curve"]
    assert not any((tmp_path / "a").glob("adapter_*")), "LoRA adapters must be merged, not saved beside the weights"
    before, after = _logprobs("builtin:smollm2-135m-instruct"), _logprobs(tmp_path / "a")
    assert (after > before).all(), f"SFT did not raise every trained answer's log-prob: {before} -> {after}"
    again = train_policy_model(EXAMPLES, tmp_path / "b", cfg, progress=False)
    assert again["loss_curve"] == rep["loss_curve"], (rep["loss_curve"], again["loss_curve"])
    assert np.allclose(_logprobs(tmp_path / "b"), after, atol=1e-5), "same seed, different checkpoint"
