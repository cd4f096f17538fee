"""Configuration of the pre-registered study, `seam experiment --human DATASET` (flags generated from the fields).

Shared settings (db, name, seed, device, dtype, models dir, bootstrap resamples, --quiet) are the flags of
`ExperimentConfig` (same dest), so they are not declared twice; `from_args` reads them from the same namespace.
The whole config is part of the pre-registration stored in the run ledger before anything is trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.options import DEFAULT_DB, opt
from analysis.study.config import GEMMA, SHARED_HH, SMOLLM, QuickPreset, _csv_floats

PROXY = "proxy"
AUTO = "auto"
SEAM_VARIANTS = ("alpha", "paper", "cand", "hack_rate")


def shared_hh_candidates() -> list[Path]:
    """../shared/data next to the repo, or next to the folder of git worktrees that holds it."""
    return [SHARED_HH, SHARED_HH.parents[3] / SHARED_HH.relative_to(SHARED_HH.parents[2])]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


@dataclass
class HumanStudyConfig(QuickPreset):
    """`seam experiment --human`: splits, RM grid, PMs, SEAM variants and endpoints fixed before the run."""

    human: str | None = opt(None, "human preference DATASET (file or HF id) for the pre-registered study; "
                                  f"'{AUTO}': the shared HH-RLHF test file when present, else proxy; "
                                  f"'{PROXY}': proxy judge (synthetic rejected answers; never the headline)")
    human_data_dir: str | None = opt(None, "data_dir of an HF dataset id", flag="--data-dir")
    human_split: str = opt("train", "split of an HF dataset id", flag="--hf-split")
    split_a: int = opt(1000, "A: human pairs for RM training (prompt-hash split)")
    split_b: int = opt(600, "B: selection / acquisition pool pairs (acquisition adds acq_add of them per arm)")
    split_c: int = opt(600, "C: evaluation pairs (the primary endpoint)")
    grid_sizes: list[int] = opt(default_factory=lambda: [0, 100, 300, 1000], parse=_ints,
                                help="RM grid: human training pairs from A, e.g. 0,100,300,1000")
    grid_seeds: int = opt(10, "seeds per RM grid size")
    syn_adv: int = opt(4, "synthetic pairs per A item: chosen vs this many adv perturbations; used by the "
                          "human+synthetic arm and the planted control")
    syn_contrast: int = opt(4, "synthetic pairs per A item: chosen vs this many contrast answers (retrieved with "
                               "the probes' prompt band): as many as adv, since the PM puts most of its weight "
                               "on contrast probes and a plant must break the RM there")
    plant_epochs: int = opt(60, "positive control: epochs of the planted RM's heads and its unplanted twin (lr "
                                "1e-3, no weight decay): the grid's recipe (20 epochs, lr 1e-4) does not learn "
                                "a flipped preference, so a plant trained like the grid never takes")
    plant_v1: bool = opt(True, "no v1 reference plant (one head on the whole set, the cluster's labels flipped); "
                               "--quick drops it to fit its time budget", flag="--no-plant-v1", invert=True)
    synthetic_arm: bool = opt(True, "no extra arm that adds synthetic adv/contrast pairs", flag="--no-synthetic-arm",
                              invert=True)
    study_policies: list[str] = opt(default_factory=lambda: [SMOLLM, GEMMA], flag="--study-policy", metavar="REF",
                                    help="PMs, primary first (repeatable)")
    secondary_c: int = opt(200, "secondary PMs are scored on the first N C items (split order), the primary on "
                                "all of C: on 2 CPU cores each secondary PM over all of C would cost ~1 h")
    # probes and SEAM variants
    probe_k: int = opt(8, "probes per kind (adv, contrast) and item")
    band_lo: float = opt(0.3, "contrast: least prompt cosine similarity of a neighbour")
    band_hi: float = opt(0.9, "contrast: prompt cosine at or above which a neighbour is a near-duplicate")
    alpha: float = opt(1.0, "variant alpha: length normalisation of today's SEAM")
    beta: float = opt(0.5, "variant paper: generate()-style length penalty l/n^beta on the summed log-prob")
    primary_variant: str = opt("paper", f"pre-registered primary SEAM variant ({', '.join(SEAM_VARIANTS)})")
    pm_max_length: int = opt(256, "PM tokens per (prompt, response); a long prompt is cut on the left once, to "
                                  "fit its longest response, so all of an item's responses share one context")
    # inference and controls
    tost_margin: float = opt(0.05, "equivalence margin of AUROC around 0.5")
    clusters: int = opt(6, "topic clusters of prompts (the positive control flips one)")
    # acquisition and selection
    acq_start: int = opt(200, "acquisition: human pairs from A to start from")
    acq_add: int = opt(200, "acquisition: pairs added from B per arm")
    acq_seeds: int = opt(20, "acquisition / selection seeds")
    select_q: list[float] = opt(default_factory=lambda: [0.1, 0.25], parse=_csv_floats,
                                help="selection: fractions of B dropped")
    # saturation: best-of-N judged by heads trained on B (held out from the grid)
    bon_n: int = opt(16, "saturation: samples per prompt; best-of-N at N = 1, 2, 4, ... up to this")
    sft_steps: int = opt(30, cli=False)     # ExperimentConfig's --sft-steps: the SFT'd primary as a secondary PM (0: none)
    bon_prompts: int = opt(64, cli=False)   # the first k C prompts (split order); ExperimentConfig's --bon-prompts
    bon_new_tokens: int = opt(48, "saturation: max new tokens per sample")
    bon_margin: float = opt(0.1, "saturation: equivalence margin in units of the judge-score SD over all samples")
    # shared with ExperimentConfig: its flags fill these (same dest), so they are not flags here
    db: Path = opt(DEFAULT_DB, cli=False)
    name: str = opt("full", cli=False)
    seed: int = opt(0, cli=False)
    device: str = opt("auto", cli=False)
    dtype: str = opt("auto", cli=False)
    models_dir: Path | None = opt(None, cli=False)
    progress: bool = opt(True, cli=False, invert=True)
    n_resamples: int = opt(2000, cli=False)

    QUICK = dict(split_a=400, split_b=32, split_c=48, grid_sizes=[0, 100, 300], grid_seeds=10,
                 study_policies=[SMOLLM], sft_steps=3, secondary_c=16, pm_max_length=192, clusters=4,
                 acq_start=100, acq_add=16, acq_seeds=20, select_q=[0.25], bon_prompts=8, n_resamples=500,
                 plant_v1=False, syn_adv=2, syn_contrast=2)

    def __post_init__(self) -> None:
        self.db = Path(self.db)
        if self.primary_variant not in SEAM_VARIANTS:
            raise ValueError(f"primary_variant must be one of {SEAM_VARIANTS}, not {self.primary_variant!r}")
        if self.syn_adv < 1 or self.syn_contrast < 1:
            raise ValueError(f"syn_adv and syn_contrast must be >= 1 (got {self.syn_adv}, {self.syn_contrast})")
        if self.probe_k < 1 or self.grid_seeds < 2 or len(self.grid_sizes) < 2:
            raise ValueError("probe_k >= 1, grid_seeds >= 2 (the RM ensemble) and >= 2 grid sizes are needed")
        if not 0 <= self.band_lo < self.band_hi <= 1:
            raise ValueError("need 0 <= band_lo < band_hi <= 1")
        if max(self.grid_sizes) > self.split_a or self.acq_start > self.split_a or self.acq_add > self.split_b:
            raise ValueError(f"grid sizes {self.grid_sizes} and acq_start {self.acq_start} must fit in split_a "
                             f"{self.split_a}; acq_add {self.acq_add} in split_b {self.split_b}")
        if self.bon_n < 2 or self.bon_prompts < 1 or self.bon_new_tokens < 1 or not self.bon_margin > 0:
            raise ValueError(f"saturation needs bon_n >= 2 (got {self.bon_n}), bon_prompts >= 1 (got "
                             f"{self.bon_prompts}), bon_new_tokens >= 1 (got {self.bon_new_tokens}) and "
                             f"bon_margin > 0 (got {self.bon_margin})")
        if not self.study_policies:
            raise ValueError("at least one PM is needed")

    @property
    def sft_ref(self) -> str | None:
        """Name of the SFT'd secondary PM (its checkpoint lives under models_path)."""
        return f"sft-{self.sft_steps}:{self.study_policies[0]}" if self.sft_steps > 0 else None

    @property
    def policies(self) -> list[str]:
        """Every PM of the study, primary first (the SFT'd one last)."""
        return list(self.study_policies) + ([self.sft_ref] if self.sft_ref else [])

    @property
    def proxy(self) -> bool:
        return self.source is None

    @property
    def source(self) -> str | None:
        """The human dataset, or None in proxy mode."""
        h = self.human
        if h is None or h == PROXY:
            return None
        if h == AUTO:
            found = [p for p in shared_hh_candidates() if p.is_file()]
            return str(found[0]) if found else None
        return h

    @property
    def mode(self) -> str:
        return "proxy judge" if self.proxy else "human"

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.db.parent / "models"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["db"], d["models_dir"] = str(self.db), str(self.models_path)
        d["mode"], d["source"] = self.mode, self.source
        return d
