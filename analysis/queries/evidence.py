"""Read SQL of the Evidence page: the pre-registered study's latest run (evidence.sql relations).

Each function takes an open read-only connection and returns a small DataFrame or dict; a DB without
study results gives empty results (the page then says how to run the study), never an error.
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd

TABLES = ("study_design", "study_endpoint", "study_controls", "study_power", "study_retrain", "study_verdict",
          "study_models")


def has_study(con: duckdb.DuckDBPyConnection, extra: tuple[str, ...] = ()) -> bool:
    """A stored study with every relation of TABLES (and of `extra`: a study written before the saturation
    tables existed has none, so its page shows no saturation section)."""
    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if not set(TABLES + extra) <= have:
        return False
    return con.execute("SELECT count(*) FROM study_verdict").fetchone()[0] > 0


def _df(con, sql: str, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    return con.execute(sql).df() if has_study(con, extra) else pd.DataFrame()


def verdict(con: duckdb.DuckDBPyConnection) -> dict:
    """{run_id, mode, headline, verdict, design (dict), written_at} of the stored study, or {}."""
    if not has_study(con):
        return {}
    row = con.execute("""SELECT v.run_id, v.mode, v.headline, v.verdict, d.design, d.written_at
                         FROM study_verdict v LEFT JOIN study_design d USING (run_id) LIMIT 1""").fetchone()
    keys = ("run_id", "mode", "headline", "verdict", "design", "written_at")
    out = dict(zip(keys, row))
    out["design"] = json.loads(out["design"]) if out["design"] else {}
    return out


def primary_endpoint(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """AUROC of each SEAM variant per (PM, RM size, arm) cell with 95% interval, Holm p and TOST."""
    return _df(con, """SELECT mode, policy, rm_size, arm, seam_variant, value AS auroc, lo, hi, n, positives,
                              p_value, p_holm, equivalent, primary_endpoint
                       FROM study_endpoint WHERE stat = 'auroc'
                       ORDER BY NOT primary_endpoint, policy, arm, rm_size, seam_variant""")


def secondary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _df(con, """SELECT mode, policy, rm_size, arm, seam_variant, stat, n, positives, p_value, p_holm, note
                       FROM study_endpoint WHERE stat <> 'auroc' ORDER BY stat, policy, arm, rm_size, seam_variant""")


def controls(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _df(con, """SELECT control, policy, rm_size, seam_variant,
                              CASE WHEN control LIKE 'manipulation%' THEN 'hack-rate gap' ELSE 'AUROC' END AS statistic,
                              value, lo, hi, n, positives, passed, note
                       FROM study_controls ORDER BY control DESC, rm_size, seam_variant""")


def power(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _df(con, "SELECT comparison, n, positives, mde, note FROM study_power")


def retrain(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _df(con, """SELECT analysis, q, arm, accuracy, lo, hi, delta_vs_random, delta_lo, delta_hi, n_seeds, n_items
                       FROM study_retrain ORDER BY analysis, q, arm""")


def rm_grid(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return _df(con, """SELECT arm, size, count(*) AS seeds, avg(accuracy_c) AS mean_accuracy_c,
                              min(accuracy_c) AS min_accuracy_c, max(accuracy_c) AS max_accuracy_c
                       FROM study_models GROUP BY arm, size ORDER BY arm, size""")


def saturation(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Best-of-N curve: judge score of each RM size's pick per (PM, N), 95% bootstrap over prompts."""
    return _df(con, """SELECT mode, policy, rm_size, bon_n, quality, lo, hi, gain, gain_lo, gain_hi, n, n_seeds
                          FROM study_saturation ORDER BY policy, rm_size, bon_n""", ("study_saturation",))


def saturation_tests(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """More N and a larger RM: delta with 95% / 90% intervals, the TOST margin, the conclusion in words."""
    return _df(con, """SELECT mode, policy, comparison, rm_size, bon_n, delta, lo, hi, lo90, hi90, delta_sd,
                                 margin, margin_sd, judge_sd, n, conclusion
                          FROM study_saturation_test ORDER BY policy, comparison LIKE 'RM%', rm_size""",
               ("study_saturation_test",))
