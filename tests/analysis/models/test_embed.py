"""Embeddings (bundled MiniLM, offline) and the UMAP prompt-map layout."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled encoder must load without the hub

from analysis.models.embed import Encoder, default_encoder_path, umap_coords  # noqa: E402


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_bundled_encoder_is_present():
    path = default_encoder_path()
    assert (path / "model.safetensors").exists() and (path / "modules.json").exists()


@pytest.mark.slow
def test_encoder_unit_vectors_and_similarity():
    enc = Encoder(device="cpu", batch_size=8)
    info = enc.info()
    assert info["dim"] == 384 and info["bundled"] and info["device"] == "cpu" and info["dtype"] == "float32"
    texts = ["How do I bake bread at home?", "What is a simple recipe for homemade bread?",
             "Which planet is closest to the sun?", ""]
    e = enc.encode(texts, progress=False)
    assert e.shape == (4, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    assert enc.encode([], progress=False).shape == (0, 384)
    # batching does not change the vectors
    np.testing.assert_allclose(Encoder(device="cpu", batch_size=2).encode(texts, progress=False), e, atol=1e-5)


def test_umap_tiny_inputs_fall_back_deterministically():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 3, 4):
        emb = _unit(rng.normal(size=(max(n, 1), 8)))[:n]
        xy = umap_coords(emb)
        assert xy.shape == (n, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
        np.testing.assert_array_equal(xy, umap_coords(emb))
    assert not umap_coords(_unit(rng.normal(size=(1, 8)))).any()
    two = umap_coords(_unit(rng.normal(size=(2, 8))))
    assert not np.allclose(two[0], two[1])
    with pytest.raises(ValueError):
        umap_coords(np.zeros(5))


@pytest.mark.slow  # first UMAP call pays numba JIT compilation (~10-20 s)
def test_umap_small_input_shape_determinism_and_sampled_fit():
    rng = np.random.default_rng(0)
    centers = _unit(rng.normal(size=(3, 32)))
    emb = _unit(np.repeat(centers, 40, axis=0) + 0.05 * rng.normal(size=(120, 32)))
    xy = umap_coords(emb, seed=0)
    assert xy.shape == (120, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    np.testing.assert_array_equal(xy, umap_coords(emb, seed=0))
    # clusters stay apart: within-cluster spread is smaller than between-cluster distances
    cent = np.stack([xy[i * 40:(i + 1) * 40].mean(0) for i in range(3)])
    spread = max(np.linalg.norm(xy[i * 40:(i + 1) * 40] - cent[i], axis=1).mean() for i in range(3))
    gaps = [np.linalg.norm(cent[a] - cent[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread
    # fit on a sample, transform the rest: every row placed, deterministic
    xs = umap_coords(emb, seed=0, fit_sample=60)
    assert xs.shape == (120, 2) and np.isfinite(xs).all()
    np.testing.assert_array_equal(xs, umap_coords(emb, seed=0, fit_sample=60))
    # a handful of rows (just above the fallback) still works
    assert umap_coords(emb[::20], seed=0).shape == (6, 2)
