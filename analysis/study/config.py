"""Configuration of `seam experiment` (one dataclass; it generates the command's flags).

Every field is a flag (`analysis.options`): default and help text live here only. `--quick` is a preset
(`ExperimentConfig.quick`) that replaces the defaults, never values given on the command line. The whole
config is stored with each run in the run ledger (`runs`, view `experiment_runs`).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.options import DEFAULT_DB, from_args, opt

SMOLLM = "builtin:smollm2-135m-instruct"
GEMMA = "builtin:gemma-3-270m"
SFT = "sft"   # placeholder in `policies`: the SFT checkpoint this experiment builds from `sft_base`
AUTO = "auto"
SHARED_HH = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
SPLITS = (("eval", 0.20), ("bon", 0.30), ("pool", 0.55))   # upper edges of the hash ranges; rest = train
VARIANTS = ("contrast", "adv")


def _csv_floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _sizes(text: str) -> list[int | None]:
    return [None if t.strip().lower() == "all" else int(t) for t in text.split(",") if t.strip()]


class QuickPreset:
    """`--quick`: a preset (class attribute QUICK) that replaces defaults, never flags given."""

    QUICK: dict = {}

    @classmethod
    def quick(cls, **overrides):
        """Small sizes for CI (a few minutes on 2 CPU cores)."""
        return cls(**{**copy.deepcopy(cls.QUICK), **overrides})

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """Flags given win; the rest come from the defaults, or from the `--quick` preset."""
        preset = {**cls.QUICK, "name": "quick"} if getattr(args, "quick", False) else {}
        return from_args(cls, args, **{k: copy.deepcopy(v) for k, v in preset.items() if getattr(args, k, None) is None})


@dataclass
class ExperimentConfig(QuickPreset):
    """`seam experiment`: sizes, models, seeds and sampling settings of one study run."""

    db: Path = opt(DEFAULT_DB, "results DuckDB file")
    name: str = opt("full", "run name: prefixes its datasets (exp-<name>:<split>) and models (--quick: quick)")
    policies: list[str] = opt(default_factory=lambda: [SMOLLM, GEMMA, SFT], flag="--policy", metavar="REF",
                              help=f"PM axis (repeatable; '{SFT}' = SFT of --sft-base built here; "
                                   f"--quick: {SMOLLM}, {SFT})")
    sft_base: str = opt(SMOLLM, f"PM to fine-tune for '{SFT}'")
    sft_steps: int = opt(30, "SFT optimizer steps")
    sft_lr: float = opt(5e-5, "SFT learning rate")
    sft_batch_size: int = opt(8, "SFT examples per step")
    sft_max_length: int = opt(128, "prompt + answer tokens per SFT example (long answers are cut)")
    rm_sizes: list[int | None] = opt(default_factory=lambda: [0, 64, 256, None], parse=_sizes,
                                     help="RM axis training pairs, e.g. 0,64,256,all")
    gold_judge: str = opt(AUTO, "scalar RM used as the gold judge (auto: the strongest RM built here)")
    bon_prompts: int = opt(48, "prompts the PMs answer (saturation, mismatch, SEAM validation); with --human: "
                               "the first k C prompts of best-of-N saturation (there default 64, --quick 8)")
    pool_prompts: int = opt(240, "SEAM-scored training pool for selection / augmentation")
    eval_prompts: int | None = opt(None, "held-out pair prompts (default: the whole eval split)")
    human_pairs: str | None = opt(AUTO, "HH-style preference file for held-out accuracy ('none' to skip; "
                                        "auto: ../shared/data HH-RLHF test when present)")
    human_pairs_limit: int = opt(200, "human pairs scored")
    policy_samples: int = opt(4, "N samples per prompt and PM", flag="--samples")
    gen_max_new_tokens: int = opt(40, "new-token cap of PM samples", flag="--max-new-tokens")
    gen_temperature: float = opt(0.8, "sampling temperature", flag="--temperature")
    variants: list[str] = opt(default_factory=lambda: list(VARIANTS), csv=True,
                              help="worse-response variants of SEAM: contrast and/or adv")
    k: int = opt(2, "worse responses per variant")
    selection_q: list[float] = opt(default_factory=lambda: [0.1, 0.25], parse=_csv_floats,
                                   help="drop fractions, e.g. 0.1,0.25")
    seeds: int = opt(3, "seeds per retraining condition")
    aug_base_pairs: int = opt(256, "base RM training pairs of the augmentation arms")
    aug_pairs: int = opt(128, "pairs added by each augmentation arm")
    n_resamples: int = opt(2000, "bootstrap resamples", flag="--bootstrap")
    seed: int = opt(0, "seed of splits, training and sampling")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = opt("auto", "model dtype (auto: bf16 on CUDA, fp32 on CPU)")
    models_dir: Path | None = opt(None, "where trained / converted models live (default: <db dir>/models)")
    keep_retrained: bool = opt(False, "keep the RMs retrained by selection / augmentation")
    progress: bool = opt(True, "no progress bars", flag="--quiet", invert=True)

    def __post_init__(self) -> None:
        self.db = Path(self.db)
        if isinstance(self.human_pairs, str) and self.human_pairs.lower() == "none":
            self.human_pairs = None
        if not self.policies:
            raise ValueError("at least one policy is needed")
        if len(self.rm_sizes) < 2:
            raise ValueError("the RM axis needs at least two sizes")
        if self.policy_samples < 2:
            raise ValueError("policy_samples must be >= 2 (best-of-N and PM pairs need two samples)")
        if not all(0 < q < 1 for q in self.selection_q):
            raise ValueError("selection q values must be in (0, 1)")
        if self.seeds < 1:
            raise ValueError("seeds must be >= 1")
        bad = set(self.variants) - set(VARIANTS)
        if bad:
            raise ValueError(f"experiment variants are contrast and/or adv, not {sorted(bad)}")

    QUICK = dict(name="quick", policies=[SMOLLM, SFT], sft_steps=3, sft_batch_size=4, rm_sizes=[0, 32, 128],
                 bon_prompts=8, pool_prompts=32, eval_prompts=32, human_pairs_limit=24, policy_samples=3,
                 gen_max_new_tokens=24, k=2, selection_q=[0.25], seeds=2, aug_base_pairs=64, aug_pairs=32,
                 n_resamples=500)


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

