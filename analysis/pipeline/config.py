"""Typed configuration of a precompute run (one dataclass; it generates the `seam precompute` flags).

The whole config is stored with each run in the `runs` table, so every number in the DB can be traced
back to the settings that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.options import DEFAULT_DB, opt

ALL_VARIANTS = ("contrast", "adv", "generated", "rejected")


@dataclass
class PrecomputeConfig:
    """`seam precompute`: every field is a flag (`analysis.options`); the whole config is stored per run."""

    dataset: str = opt(help="JSONL/Parquet/CSV file, HF datasets id, or builtin:chatterbot", positional=True)
    policies: list[str] = opt(default_factory=list, flag="--policy", metavar="REF",
                              help="policy model (repeatable): HF id, local dir, .gguf file, or "
                                   "builtin:smollm2-135m-instruct")
    rewards: list[str] = opt(default_factory=list, flag="--reward", metavar="REF",
                             help="reward model (repeatable): any scalar AutoModelForSequenceClassification "
                                  "(HF id or dir)")
    db: Path = opt(DEFAULT_DB, "results DuckDB file")
    dataset_name: str | None = opt(None, "dataset name in the DB (default: the reference)", flag="--name")
    format: str = opt("auto", "row format", choices=("auto", "trl", "stackexchange", "hh", "gold"))
    columns: str | None = opt(None, "column mapping, e.g. prompt=question,chosen=response_j,rejected=response_k")
    split: str = opt("train", "split of an HF datasets id")
    data_dir: str | None = opt(None, "data_dir of an HF datasets id (e.g. harmless-base)")
    limit: int | None = opt(None, "ingest at most this many samples (after --fraction)")
    fraction: float | None = opt(None, "keep a deterministic hash-based share of samples, e.g. 0.1")
    variants: list[str] = opt(default_factory=lambda: ["contrast", "adv", "rejected"], csv=True,
                              help="comma list of " + ",".join(ALL_VARIANTS))
    k: int = opt(4, "worse responses per sample and variant")
    seed: int = opt(0, "seed of perturbations and sampling")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = opt("auto", "model dtype (auto: bf16 on CUDA, fp32 on CPU)",
                     choices=("auto", "float32", "bfloat16", "float16"))
    token_budget: int = opt(4096, "padded tokens per PM forward batch (raise on GPU)")
    max_length: int = opt(1024, "longest prompt + response in tokens")
    rm_batch_size: int = opt(16, "responses per RM forward batch")
    contrast_threshold: float = opt(0.9, "skip contrast answers at least this cosine-similar to the own gold")
    generator: str | None = opt(None, "PM that writes `generated` answers (default: first --policy)")
    gen_k: int | None = opt(None, "`generated` answers per prompt (default: --k; sampling is slow)")
    gen_max_new_tokens: int = opt(48, "new-token cap of generated answers and policy samples")
    gen_temperature: float = opt(0.8, "sampling temperature")
    gen_top_p: float = opt(0.95, "nucleus (top-p) mass of sampling")
    gen_batch_size: int = opt(32, "prompts per generation batch (the resume unit of generation)")
    generator_backend: str = opt("hf", "sampler of generated answers and policy samples: hf (CPU or GPU, "
                                 "transformers) or vllm (CUDA only; pip install -e '.[vllm]')", choices=("hf", "vllm"))
    policy_samples: int = opt(0, "N own samples per prompt from every PM (variant 'policy': PM-generated pairs)")
    encoder: str | None = opt(None, "sentence encoder for contrast/UMAP (default: bundled MiniLM)")
    models_dir: Path | None = opt(None, "where converted models live (default: <db dir>/models)")
    umap: bool = opt(True, "compute the UMAP prompt map")
    ray: str | None = opt(None, "score with PMs/RMs on Ray actor pools (one replica per GPU): auto (the cluster "
                                "this node joined with `ray start`), HOST:PORT, ray://HOST:PORT, or local[:N] "
                                "(a private instance with N CPUs); needs the [ray] extra", metavar="ADDRESS")
    ray_actor_cpus: int = opt(1, "CPU cores per scoring actor on a cluster without GPUs")
    page_samples: int = opt(256, "samples per scoring commit (the resume unit)")
    progress: bool = opt(True, "no progress bars", flag="--quiet", invert=True)

    def __post_init__(self) -> None:
        self.db = Path(self.db)
        # Model references are stored in a form that works from any directory (absolute local paths);
        # what the user typed is kept for display (models.info.given).
        from analysis.models.resolve import canonical_ref
        typed = [*self.policies, *self.rewards, *([self.generator] if self.generator else [])]
        self.given_refs: dict[str, str] = {canonical_ref(r): r for r in typed}
        self.policies = [canonical_ref(r) for r in self.policies]
        self.rewards = [canonical_ref(r) for r in self.rewards]
        if self.generator:
            self.generator = canonical_ref(self.generator)
        unknown = set(self.variants) - set(ALL_VARIANTS)
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; choose from {', '.join(ALL_VARIANTS)}")
        if self.k < 1:
            raise ValueError("--k must be >= 1")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ValueError("--fraction must be in (0, 1]")
        if self.ray_actor_cpus < 1:
            raise ValueError("--ray-actor-cpus must be >= 1")

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

