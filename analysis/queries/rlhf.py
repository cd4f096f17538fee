"""Read queries of the real RLHF grid (`seam rlhf-grid`): cells (rlhf_results rows with a cell_id) and
their training curves (rlhf_curves). Same conventions as the other analysis.queries modules: `con` first, parameters
named, small DataFrames, empty (with the columns) when the relations are absent."""

from __future__ import annotations

import duckdb
import pandas as pd

from analysis.queries.base import _df, relation_exists

CELL_COLUMNS = ["source", "policy", "reward", "cell_id", "algorithm", "score", "score_lo", "score_hi", "n_eval",
                "judge", "judge_kind", "judge_start", "judge_trained", "judge_gain", "judge_gain_lo",
                "judge_gain_hi", "kl", "kl_lo", "kl_hi", "steps", "seed", "beta", "wall_s", "finished_at"]
CURVE_COLUMNS = ["cell_id", "policy", "reward", "step", "rm_reward", "rm_reward_std", "kl", "mean_length",
                 "loss", "entropy"]


def _has_grid(con: duckdb.DuckDBPyConnection) -> bool:
    if not (relation_exists(con, "rlhf_results") and relation_exists(con, "rlhf_curves")):
        return False
    return bool(_df(con, "SELECT count(*) AS n FROM duckdb_columns() WHERE table_name = 'rlhf_results'"
                         " AND column_name = 'cell_id'")["n"][0])


def rlhf_cells(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row per finished cell of every `seam rlhf-grid` run (newest grid first). `score` is the judge's
    win rate of the trained policy over the starting PM (ties 1/2) with its bootstrap 95% interval."""
    if not _has_grid(con):
        return pd.DataFrame(columns=CELL_COLUMNS)
    return _df(con, f"""
        SELECT {', '.join(CELL_COLUMNS)} FROM rlhf_results WHERE cell_id IS NOT NULL
        ORDER BY max(finished_at) OVER (PARTITION BY source) DESC, source, policy, reward
    """)


def rlhf_curves(con: duckdb.DuckDBPyConnection, source: str) -> pd.DataFrame:
    """Training curves (per step: RM reward, KL, length) of the cells of one grid."""
    if not _has_grid(con):
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return _df(con, f"SELECT {', '.join(CURVE_COLUMNS)} FROM rlhf_curves WHERE source = $source"
                    " ORDER BY policy, reward, step", {"source": source})
