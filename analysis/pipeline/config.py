"""Typed configuration of a precompute run (one dataclass, mirrored 1:1 by `seam precompute` flags).

The whole config is stored with each run in the `runs` table, so every number in the DB can be traced
back to the settings that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

ALL_VARIANTS = ("contrast", "adv", "generated", "rejected")


@dataclass
class PrecomputeConfig:
    dataset: str                                   # file path, HF datasets id, or builtin:chatterbot
    policies: list[str] = field(default_factory=list)   # PM references, as given (HF id / dir / .gguf / builtin:)
    rewards: list[str] = field(default_factory=list)    # RM references (scalar sequence classifiers)
    db: Path = Path("cache/seam.duckdb")
    dataset_name: str | None = None                # name in the DB (default: the dataset reference)
    format: str = "auto"                           # auto | trl | stackexchange | hh | gold
    columns: str | None = None                     # e.g. "prompt=question,chosen=response_j"
    split: str = "train"
    data_dir: str | None = None
    limit: int | None = None                       # max samples ingested (after --fraction)
    fraction: float | None = None                  # keep a deterministic hash-based share of samples
    variants: list[str] = field(default_factory=lambda: ["contrast", "adv", "rejected"])
    k: int = 4                                     # worse responses per sample and variant
    seed: int = 0
    device: str = "auto"                           # auto | cpu | cuda | cuda:N
    dtype: str = "auto"                            # auto | float32 | bfloat16
    token_budget: int = 4096                       # padded tokens per PM forward batch
    max_length: int = 1024
    rm_batch_size: int = 16
    contrast_threshold: float = 0.9                # near-duplicate answer cosine for contrast
    generator: str | None = None                   # PM that writes `generated` answers (default: first PM)
    gen_k: int | None = None                       # `generated` answers per prompt (default: k; sampling is slow)
    gen_max_new_tokens: int = 48
    gen_temperature: float = 0.8
    gen_batch_size: int = 8
    policy_samples: int = 0                        # N own samples per prompt from each PM (variant 'policy')
    encoder: str | None = None                     # sentence encoder (default: bundled MiniLM)
    models_dir: Path | None = None                 # converted models (default: <db dir>/models)
    umap: bool = True
    shard: tuple[int, int] | None = None           # (i, n): process only samples with hash % n == i
    page_samples: int = 256                        # samples per scoring unit (one commit each)
    progress: bool = True

    def __post_init__(self) -> None:
        self.db = Path(self.db)
        unknown = set(self.variants) - set(ALL_VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; choose from {', '.join(ALL_VARIANTS)}")
        if self.k < 1:
            raise ValueError("--k must be >= 1")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError("--fraction must be in (0, 1]")
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise ValueError(f"--shard {i}/{n}: need 0 <= i < n")

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.db.parent / "models"

    @property
    def name(self) -> str:
        return self.dataset_name or self.dataset

    def to_dict(self) -> dict:
        d = asdict(self)
        d["db"] = str(self.db)
        d["models_dir"] = str(self.models_path)
        return d


def parse_shard(text: str) -> tuple[int, int]:
    """'3/8' -> (3, 8)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects i/n (e.g. 0/4), got {text!r}") from None
    return i, n
