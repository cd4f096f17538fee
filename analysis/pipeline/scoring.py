"""One batch scorer for both ways a precompute scores responses: in-process and as a Ray Data actor.

`BatchScorer` loads one model (a PM or an RM) and maps a batch of columns (response_id, prompt, text) to
the columns of its score table (`pm_scores` / `rm_scores`). The single-process path calls it page by page;
`analysis.pipeline.distributed` hands the same class to `Dataset.map_batches` as an actor, so the two paths
cannot drift apart: the scores of a Ray run are computed by exactly this code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from analysis.pipeline.config import PrecomputeConfig
from analysis.storage import store

#: kind -> (score table, model column)
TABLES = {"pm": ("pm_scores", "policy"), "rm": ("rm_scores", "reward")}
INPUT_COLUMNS = ("response_id", "prompt", "text")
#: Extra output column of the Ray path: the model's info (same on every row), so the driver can record the
#: model the workers loaded without loading it itself.
INFO_COLUMN = "model_info"


@dataclass(frozen=True)
class ScorerSpec:
    """Everything needed to load and run one scoring model; plain data, so it travels to Ray workers."""
    kind: str                  # "pm" | "rm"
    ref: str
    models_dir: str
    device: str = "auto"
    dtype: str = "auto"
    max_length: int = 1024
    token_budget: int = 4096
    rm_batch_size: int = 16

    @classmethod
    def from_config(cls, cfg: PrecomputeConfig, kind: str, ref: str) -> "ScorerSpec":
        if kind not in TABLES:
            raise ValueError(f"unknown scorer kind {kind!r}; expected one of {sorted(TABLES)}")
        return cls(kind=kind, ref=ref, models_dir=str(cfg.models_path), device=cfg.device, dtype=cfg.dtype,
                   max_length=cfg.max_length, token_budget=cfg.token_budget, rm_batch_size=cfg.rm_batch_size)

    @property
    def table(self) -> str:
        return TABLES[self.kind][0]

    def to_dict(self) -> dict:
        return asdict(self)


def load_model(spec: ScorerSpec) -> Any:
    """The PolicyModel / RewardModel that `spec` names (loaded on this process's device)."""
    if spec.kind == "pm":
        from analysis.models.policy import PolicyConfig, PolicyModel
        return PolicyModel(spec.ref, spec.models_dir,
                           PolicyConfig(device=spec.device, dtype=spec.dtype, max_length=spec.max_length,
                                        token_budget=spec.token_budget))
    from analysis.models.reward import RewardModel
    return RewardModel(spec.ref, device=spec.device, dtype=spec.dtype, batch_size=spec.rm_batch_size)


class BatchScorer:
    """Scores batches of (response_id, prompt, text) with one model.

    `model` reuses an already loaded model (the in-process path keeps the PM loaded between generation and
    scoring); without it the model is loaded here (a Ray actor loads it once per replica). With
    `with_info`, each output batch also carries the model's info as a JSON column (the Ray path)."""

    def __init__(self, spec: ScorerSpec | Mapping, model: Any = None, with_info: bool = False):
        self.spec = spec if isinstance(spec, ScorerSpec) else ScorerSpec(**spec)
        self.model = model if model is not None else load_model(self.spec)
        self.with_info = with_info
        self._info_json: str | None = None

    def info(self) -> dict:
        return self.model.info()

    def __call__(self, batch: Mapping[str, Sequence]) -> dict[str, np.ndarray]:
        ids = [str(x) for x in batch["response_id"]]
        prompts = [str(x) for x in batch["prompt"]]
        texts = [str(x) for x in batch["text"]]
        ref = np.array([self.spec.ref] * len(ids), dtype=object)
        if self.spec.kind == "pm":
            res = self.model.score(prompts, texts, progress=False)
            lp = np.array([float(r[0]) for r in res], dtype=np.float64)
            n = np.array([int(r[1]) for r in res], dtype=np.int64)
            out = {"response_id": np.array(ids, dtype=object), "policy": ref, "logprob_sum": lp,
                   "n_tokens": n, "logprob_mean": lp / np.maximum(n, 1)}
        else:
            scores = np.asarray(self.model.score(prompts, texts, progress=False), dtype=np.float64)
            out = {"response_id": np.array(ids, dtype=object), "reward": ref, "score": scores}
        if self.with_info:
            if self._info_json is None:
                self._info_json = json.dumps(self.info(), sort_keys=True, default=str)
            out[INFO_COLUMN] = np.array([self._info_json] * len(ids), dtype=object)
        return out

    def rows(self, page: Sequence[tuple[str, str, str, str]]) -> list[tuple]:
        """Score rows (in `store.COLUMNS[table]` order) for a page of (sample_id, response_id, prompt, text)."""
        out = self({"response_id": [p[1] for p in page], "prompt": [p[2] for p in page],
                    "text": [p[3] for p in page]})
        cols = store.COLUMNS[self.spec.table]
        return list(zip(*(out[c].tolist() for c in cols)))
