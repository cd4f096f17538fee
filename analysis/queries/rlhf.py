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


# ------------------------------------------------------------------ held-out pairs and their hand labels

PAIR_CELL_COLUMNS = ["source", "cell_id", "policy", "reward", "n_pairs"]
HUMAN_COLUMNS = ["cell_id", "n", "wins", "ties", "losses", "human", "human_lo", "human_hi"]


def has_eval_pairs(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the DB has the held-out evaluation pairs relation (DBs of older versions have not)."""
    return relation_exists(con, "rlhf_eval_pairs")


def rlhf_pair_cells(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Cells with stored held-out pairs (what the Spot-check page can queue), one row per cell."""
    if not has_eval_pairs(con):
        return pd.DataFrame(columns=PAIR_CELL_COLUMNS)
    return _df(con, """SELECT source, cell_id, policy, reward, count(*) AS n_pairs FROM rlhf_eval_pairs
                       GROUP BY ALL ORDER BY source, policy, reward, cell_id""")


def rlhf_human_win(con: duckdb.DuckDBPyConnection, labels: pd.DataFrame, *, n_resamples: int = 2000,
                   seed: int = 0) -> pd.DataFrame:
    """Per cell: the hand-labeled win rate of the trained policy over the starting PM on its held-out pairs.

    `labels`: consensus labels (a_id, b_id, label 'a' | 'b' | 'tie'; `analysis.storage.labels.consensus`),
    matched to `rlhf_eval_pairs` by the two answer ids in either order. A trained win counts 1, a tie 1/2, a
    start win 0 — the judge's win rate definition (`analysis.stats.rlhf.win_rate`, same bootstrap), so the
    two are comparable and the page can show one in place of the other. Cells without labels are absent.
    Columns: cell_id, n (labeled pairs), wins, ties, losses, human, human_lo, human_hi.
    """
    from analysis.stats.rlhf import win_rate

    if labels is None or len(labels) == 0 or not has_eval_pairs(con):
        return pd.DataFrame(columns=HUMAN_COLUMNS)
    lab = labels[labels["label"].isin(["a", "b", "tie"])][["a_id", "b_id", "label"]].copy()
    con.register("_labels_in", lab)
    try:
        got = _df(con, """
            SELECT e.cell_id, e.idx,
                   CASE WHEN l.label = 'tie' THEN 0.5
                        WHEN (l.label = 'a') = (l.a_id = e.trained_id) THEN 1.0 ELSE 0.0 END AS win
            FROM rlhf_eval_pairs e JOIN _labels_in l
              ON (l.a_id = e.start_id AND l.b_id = e.trained_id) OR (l.a_id = e.trained_id AND l.b_id = e.start_id)
            ORDER BY e.cell_id, e.idx
        """)
    finally:
        con.unregister("_labels_in")
    rows = []
    for cid, g in got.groupby("cell_id", sort=True):
        w = g["win"].to_numpy()
        p, lo, hi, n = win_rate(w, 1.0 - w, n_resamples=n_resamples, seed=seed)   # items: 1, 1/2, 0 as above
        rows.append(dict(cell_id=cid, n=n, wins=int((w == 1).sum()), ties=int((w == 0.5).sum()),
                         losses=int((w == 0).sum()), human=p, human_lo=lo, human_hi=hi))
    return pd.DataFrame(rows, columns=HUMAN_COLUMNS)
