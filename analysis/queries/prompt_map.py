"""Queries of the prompt map page: UMAP points with their sample's SEAM, and the samples of a selection.
"""

from __future__ import annotations

from typing import Sequence

import duckdb
import pandas as pd

from analysis.queries.base import _df
from analysis.queries.selection import Selection

def prompt_map_points(con: duckdb.DuckDBPyConnection, *, variant: str, policy: str, reward: str,
                      alpha: float = 1.0, tau: float = 0.0, max_points: int = 20_000,
                      seed: int = 0) -> tuple[pd.DataFrame, int]:
    """UMAP coordinates joined with the sample's metrics for one (variant, PM, RM); downsampled in SQL.

    Returns (points, n_total). points columns: sample_id, x, y, seam, hack_rate, mismatch (RM prefers
    some worse response over gold), dataset, source, prompt (truncated). When the map has more than
    `max_points` samples a reservoir sample (`USING SAMPLE`) is returned and n_total says how many exist.
    """
    max_points = max(10, min(int(max_points), 200_000))
    params: dict = {"variant": variant, "policy": policy, "reward": reward}
    src = Selection(alpha=alpha, tau=tau, variants=(variant,), policies=(policy,), rewards=(reward,)).source(params)
    n_total = int(_df(con, "SELECT count(*) AS n FROM prompt_map")["n"][0])
    sampled = f"USING SAMPLE reservoir({max_points} ROWS) REPEATABLE ({int(seed)})" if n_total > max_points else ""
    df = _df(con, f"""
        WITH pm AS (SELECT sample_id, x, y FROM prompt_map {sampled}),
        m AS (SELECT sample_id, seam, hack_rate, NOT rm_prefers_gold AS mismatch FROM {src}
              WHERE variant = $variant AND policy = $policy AND reward = $reward
                AND sample_id IN (SELECT sample_id FROM pm))
        SELECT pm.sample_id, pm.x, pm.y, m.seam, m.hack_rate, m.mismatch, s.dataset, s.source,
               left(s.prompt, 120) AS prompt
        FROM pm JOIN samples s USING (sample_id) LEFT JOIN m USING (sample_id)
        ORDER BY pm.sample_id
    """, params)
    return df, n_total


def samples_by_ids(con: duckdb.DuckDBPyConnection, sample_ids: Sequence[str], limit: int = 1000) -> pd.DataFrame:
    """Sample rows (id, dataset, source, prompt) for a selection, capped at `limit`."""
    return _df(con, """
        SELECT sample_id, dataset, source, left(prompt, 200) AS prompt FROM samples
        WHERE list_contains($ids::VARCHAR[], sample_id) ORDER BY sample_id LIMIT $limit
    """, {"ids": list(sample_ids), "limit": int(limit)})


# The functions the dashboard pages call (the benchmark times each of them).
