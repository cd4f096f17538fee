"""Queries of the prompt map page: UMAP points with their sample's SEAM, and the samples of a selection.
"""

from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

import numpy as np

from analysis.queries.base import _df, add_t, add_wilson
from analysis.queries.selection import SAMPLE_MOD, Selection

def prompt_map_points(con: duckdb.DuckDBPyConnection, *, variant: str, policy: str, reward: str,
                      alpha: float = 1.0, tau: float = 0.0, max_points: int = 20_000,
                      seed: int = 0) -> tuple[pd.DataFrame, int]:
    """UMAP coordinates joined with the sample's metrics for one (variant, PM, RM); downsampled in SQL.

    Returns (points, n_total). points columns: sample_id, x, y, seam, hack_rate, mismatch (RM prefers
    some worse response over gold), dataset, source, prompt (truncated). When the map has more than
    `max_points` samples a deterministic hash sample of max_points is returned (the same points for a seed,
    whatever the widget values) and n_total says how many exist.
    """
    max_points = max(10, min(int(max_points), 200_000))
    params: dict = {"variant": variant, "policy": policy, "reward": reward, "seed": int(seed), "n": max_points}
    src = Selection(alpha=alpha, tau=tau, variants=(variant,), policies=(policy,), rewards=(reward,)).source(params)
    n_total = int(_df(con, "SELECT count(*) AS n FROM prompt_map")["n"][0])
    # Downsampling: the max_points samples first in hash(sample_id, seed) order, searched within a hash subset
    # of ~2x max_points (every table is then filtered by a hash before any join, so the cost stays bounded).
    sub = "TRUE"
    if n_total > max_points:
        params.update(p_mod=SAMPLE_MOD, p_keep=max(1, int(SAMPLE_MOD * min(1.0, 2.0 * max_points / n_total))))
        sub = "hash(sample_id) % $p_mod < $p_keep"
    df = _df(con, f"""
        WITH pm AS (SELECT sample_id, x, y FROM prompt_map WHERE {sub}
                    ORDER BY hash(sample_id, $seed), sample_id LIMIT $n),
        m AS (SELECT sample_id, seam, hack_rate, NOT rm_prefers_gold AS mismatch FROM {src}
              WHERE variant = $variant AND policy = $policy AND reward = $reward AND {sub}
                AND sample_id IN (SELECT sample_id FROM pm)),
        s AS (SELECT sample_id, dataset, source, left(prompt, 120) AS prompt FROM samples WHERE {sub})
        SELECT pm.sample_id, pm.x, pm.y, m.seam, m.hack_rate, m.mismatch, s.dataset, s.source, s.prompt
        FROM pm JOIN s USING (sample_id) LEFT JOIN m USING (sample_id)
        ORDER BY pm.sample_id
    """, params)
    return df, n_total


def samples_by_ids(con: duckdb.DuckDBPyConnection, sample_ids: Sequence[str], limit: int = 1000) -> pd.DataFrame:
    """Sample rows (id, dataset, source, prompt) for a selection, capped at `limit`."""
    return _df(con, """
        SELECT sample_id, dataset, source, left(prompt, 200) AS prompt FROM samples
        WHERE list_contains($ids::VARCHAR[], sample_id) ORDER BY sample_id LIMIT $limit
    """, {"ids": list(sample_ids), "limit": int(limit)})


def ctfidf_terms(docs_by_cluster: Sequence[str], top: int = 4) -> list[list[str]]:
    """Top terms per cluster by class-based TF-IDF (BERTopic's c-TF-IDF): all prompts of a cluster are one
    document; a term scores tf(term, cluster) * log(1 + A / f(term)), A = mean words per cluster, f = the
    term's count over all clusters. Why not plain TF-IDF: it ranks rare words of single prompts, not what
    a cluster is about."""
    from sklearn.feature_extraction.text import CountVectorizer

    try:
        vec = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b", max_features=50_000)
        x = vec.fit_transform(docs_by_cluster).toarray().astype(float)
    except ValueError:  # no words at all
        return [[] for _ in docs_by_cluster]
    terms = np.array(vec.get_feature_names_out())
    tf = x / np.maximum(x.sum(axis=1, keepdims=True), 1)
    idf = np.log(1 + x.sum(axis=1).mean() / np.maximum(x.sum(axis=0), 1))
    score = tf * idf
    return [[str(t) for t, v in zip(terms[np.argsort(-row)[:top]], np.sort(-row)[:top]) if v < 0] for row in score]


def prompt_clusters(con: duckdb.DuckDBPyConnection, *, k: int, variant: str, policy: str, reward: str,
                    max_points: int = 20_000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Topic clusters of the prompts on the map: k-means on the stored prompt embeddings (on the 2-D map
    coordinates when the DB has none), each labelled by its c-TF-IDF top terms, with the cluster's mismatch
    rate (RM prefers some worse response over gold; Wilson 95%) and mean SEAM (t 95%) for one
    (variant, PM, RM).

    Returns (assignments: sample_id, cluster; clusters: cluster, terms, n, n_scored, mismatch (+ _lo/_hi),
    mean_seam, lo, hi, x, y (centroid on the map); basis: 'embeddings' or 'map coordinates'). Deterministic
    for a seed; at most `max_points` prompts (the same hash sample as the map)."""
    from sklearn.cluster import KMeans

    pts, _ = prompt_map_points(con, variant=variant, policy=policy, reward=reward, max_points=max_points, seed=seed)
    if pts.empty:
        return pd.DataFrame(columns=["sample_id", "cluster"]), pd.DataFrame(), "none"
    emb = _df(con, """SELECT sample_id, embedding FROM prompt_embeddings
                      WHERE list_contains($ids::VARCHAR[], sample_id)""", {"ids": list(pts["sample_id"])})
    if len(emb) == len(pts):
        emb = emb.set_index("sample_id").loc[pts["sample_id"]]
        feats, basis = np.vstack(emb["embedding"].to_numpy()).astype(np.float32), "embeddings"
    else:
        feats, basis = pts[["x", "y"]].to_numpy(dtype=np.float32), "map coordinates"
    k = max(2, min(int(k), len(pts)))
    labels = KMeans(n_clusters=k, n_init=4, random_state=int(seed)).fit_predict(feats)
    full = _df(con, "SELECT sample_id, prompt FROM samples WHERE list_contains($ids::VARCHAR[], sample_id)",
               {"ids": list(pts["sample_id"])}).set_index("sample_id")["prompt"]
    pts = pts.assign(cluster=labels, full_prompt=pts["sample_id"].map(full).fillna(pts["prompt"]))
    terms = ctfidf_terms([" ".join(g["full_prompt"]) for _, g in pts.groupby("cluster", sort=True)])
    agg = pts.groupby("cluster", sort=True).agg(
        n=("sample_id", "size"), n_scored=("mismatch", "count"),
        k_mismatch=("mismatch", lambda m: int(m.dropna().astype(bool).sum())),
        mean=("seam", "mean"), sd=("seam", "std"), n_seam=("seam", "count"), x=("x", "mean"), y=("y", "mean"),
    ).reset_index()
    agg["terms"] = [", ".join(t) for t in terms]
    agg = add_wilson(agg, "k_mismatch", "n_scored", "mismatch")
    agg = add_t(agg.rename(columns={"n": "n_prompts"}).rename(columns={"n_seam": "n"}), bounds=(0.0, 1.0))
    agg = agg.rename(columns={"n": "n_seam", "n_prompts": "n", "mean": "mean_seam"})
    cols = ["cluster", "terms", "n", "n_scored", "mismatch", "mismatch_lo", "mismatch_hi", "mean_seam", "lo", "hi",
            "x", "y"]
    return pts[["sample_id", "cluster"]], agg[cols], basis


# The functions the dashboard pages call (the benchmark times each of them).
