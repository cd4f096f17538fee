"""Queries of the saturation page: imported RLHF results, the experiment's grid, and the built-in
proxy and axis qualities computed from the base tables (`scored_vs_gold` of metrics.sql).
"""

from __future__ import annotations

import duckdb
import pandas as pd

from analysis.queries.base import _df, add_t, add_wilson, relation_exists
from analysis.queries.selection import sample_keep
from analysis.storage import aggregates

def rlhf_grid(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Imported RLHF results (seam import-rlhf): policy, reward, score, source, n (runs averaged)."""
    cols = ["policy", "reward", "source", "score", "n"]
    if not relation_exists(con, "rlhf_results"):
        return pd.DataFrame(columns=cols)
    # Cells of `seam rlhf-grid` (they carry a cell_id) have their own panel with intervals.
    own = _df(con, "SELECT count(*) AS n FROM duckdb_columns() WHERE table_name = 'rlhf_results' "
                   "AND column_name = 'cell_id'")["n"].iloc[0]
    return _df(con, f"""
        SELECT policy, reward, coalesce(source, '') AS source, avg(score) AS score, count(*) AS n
        FROM rlhf_results {"WHERE cell_id IS NULL" if own else ""} GROUP BY ALL ORDER BY source, policy, reward
    """)


def saturation_grid(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The `saturation_grid` relation (best-of-N proxy written by `seam experiment`), if it exists.

    Columns: policy, reward, quality, quality_lo, quality_hi, n, metric, plus whichever of the optional
    columns (labels, axis ranks, gain / win rate with intervals, random / oracle quality) the relation has.
    Empty when absent.
    """
    cols = ["policy", "reward", "quality", "quality_lo", "quality_hi", "n", "metric"]
    optional = ["policy_label", "reward_label", "policy_rank", "reward_rank", "bon_n", "judge", "random_quality",
                "oracle_quality", "gain", "gain_lo", "gain_hi", "win_rate", "win_lo", "win_hi", "regret"]
    if not relation_exists(con, "saturation_grid"):
        return pd.DataFrame(columns=cols)
    have = set(_df(con, "SELECT column_name FROM duckdb_columns() WHERE table_name = 'saturation_grid'")["column_name"])
    if not set(cols) <= have:
        return pd.DataFrame(columns=cols)
    sel = cols + [c for c in optional if c in have]   # names from the fixed lists above only
    return _df(con, f"SELECT {', '.join(sel)} FROM saturation_grid ORDER BY metric, policy, reward")


def proxy_grid(con: duckdb.DuckDBPyConnection, *, variant: str, alpha: float = 1.0, beta: float = 1.0,
               max_samples: int | None = 50_000) -> pd.DataFrame:
    """Built-in saturation proxy from the base tables, per (PM, RM).

    The KL-regularised RLHF optimum restricted to a sample's candidate set {y*} ∪ {y_j} (of `variant`)
    is π_RL(y) ∝ π(y)·exp(r(y)/β) with π(y) ∝ exp(ℓ_α(y)). The proxy is the mean over samples of
    π_RL(y*) — how much probability the tuned policy would put on the gold answer. It depends on both
    models: a flat PM or an RM that prefers worse answers both lower it. β → ∞ gives the PM alone,
    β → 0 the RM alone. Computed on a deterministic hash sample of ≤ max_samples samples (None = all).
    Columns: policy, reward, n, quality, sd, lo, hi (t 95%).
    """
    beta = max(1e-6, float(beta))
    params: dict = {"variant": variant, "alpha": float(alpha), "beta": beta}
    if (alpha == 1.0 and beta in aggregates.BETA_GRID and max_samples == aggregates.AXIS_MAX_SAMPLES
            and relation_exists(con, "proxy_quality")):   # precomputed by finalize on the same hash sample
        df = _df(con, "SELECT policy, reward, n, quality, sd FROM proxy_quality WHERE variant = $variant"
                      " AND beta = $beta ORDER BY policy, reward", params)
        return add_t(df, mean="quality", bounds=(0.0, 1.0))
    sampled = ", sample_mod := $s_mod, sample_keep := $s_keep" if sample_keep(con, max_samples, params) else ""
    df = _df(con, f"""
        SELECT policy, reward, count(*) AS n, avg(pg) AS quality, stddev_samp(pg) AS sd
        FROM proxy_gold_prob_at($alpha, [$beta], $variant{sampled}) GROUP BY ALL ORDER BY policy, reward
    """, params)
    return add_t(df, mean="quality", bounds=(0.0, 1.0))


def axis_quality(con: duckdb.DuckDBPyConnection, *, variant: str, alpha: float = 1.0,
                 max_samples: int | None = 50_000) -> pd.DataFrame:
    """Quality of each model alone (the saturation axes).

    When `seam experiment` wrote `model_quality`, its rows are used (RM accuracy on held-out pairs,
    PM gold-judged quality; metric names as stored). Otherwise, from the base tables on a hash sample of
    ≤ max_samples samples: PM = mean over samples of the PM's own probability of the gold answer within
    {y*} ∪ {y_j} (the proxy at β → ∞), t 95%; RM = accuracy on the dataset's human pairs (variant
    'rejected') when present, else on gold vs `variant`, Wilson 95%.
    Columns: model, role, quality, lo, hi, n, metric.
    """
    cols = ["model", "role", "quality", "lo", "hi", "n", "metric"]
    if relation_exists(con, "model_quality"):
        mq = _df(con, """
            SELECT model, role, value AS quality, lo, hi, n, metric FROM model_quality
            WHERE role IN ('policy', 'reward') ORDER BY role, model, metric""")
        if not mq.empty:
            # one metric per role for the curves: RM accuracy, PM judge quality, when present
            pref = {"reward": ("acc:",), "policy": ("judge_mean", "judge_win_vs_gold")}
            keep = []
            for role, g in mq.groupby("role"):
                for prefix in pref.get(role, ()):
                    hit = g[g["metric"].str.startswith(prefix)]
                    if not hit.empty:
                        keep.append(hit[hit["metric"] == hit["metric"].iloc[0]])
                        break
                else:
                    keep.append(g[g["metric"] == g["metric"].iloc[0]])
            return pd.concat(keep, ignore_index=True)[cols]
    params: dict = {"variant": variant, "alpha": float(alpha)}
    if (alpha == 1.0 and max_samples == aggregates.AXIS_MAX_SAMPLES and relation_exists(con, "axis_pm_quality")
            and relation_exists(con, "rm_accuracy")):
        # finalize's tables: PM axis on the same hash sample, RM axis over all pairs (rm_accuracy)
        pm = _df(con, "SELECT policy AS model, n, quality, sd FROM axis_pm_quality WHERE variant = $variant"
                      " ORDER BY model", params)
        rm_sql = "SELECT reward AS model, n, correct FROM rm_accuracy WHERE variant = $ref ORDER BY 1"
        cond = ""
    else:
        sampled = ", sample_mod := $s_mod, sample_keep := $s_keep" if sample_keep(con, max_samples, params) else ""
        pm = _df(con, f"""
            SELECT policy AS model, count(*) AS n, avg(pg) AS quality, stddev_samp(pg) AS sd
            FROM pm_gold_prob_at($alpha, $variant{sampled}) GROUP BY ALL ORDER BY model
        """, params)
        cond = "AND hash(sample_id) % $s_mod < $s_keep" if sampled else ""
        rm_sql = None
    pm = add_t(pm, mean="quality", bounds=(0.0, 1.0))
    pm["role"] = "policy"
    pm["metric"] = f"PM P(gold) within gold+{variant} (alpha={alpha:g})"
    has_rej = bool(_df(con, "SELECT count(*) AS n FROM (SELECT 1 FROM responses WHERE variant = 'rejected' LIMIT 1)")["n"][0])
    params["ref"] = "rejected" if has_rej else variant
    rm = _df(con, rm_sql or f"""
        WITH r AS (SELECT response_id, sample_id, variant FROM responses
                   WHERE (variant = 'gold' OR variant = $ref) {cond}),
        sc AS (SELECT r.sample_id, r.variant, s.reward, s.score FROM r JOIN rm_scores s USING (response_id))
        SELECT w.reward AS model, count(*) AS n, count(*) FILTER (WHERE g.score > w.score) AS correct
        FROM sc w JOIN sc g ON g.sample_id = w.sample_id AND g.reward = w.reward AND g.variant = 'gold'
        WHERE w.variant = $ref GROUP BY ALL ORDER BY 1
    """, params)
    rm = add_wilson(rm, "correct", "n", "quality").rename(columns={"quality_lo": "lo", "quality_hi": "hi"})
    rm = rm.assign(role="reward", metric=f"RM accuracy, gold vs {params['ref']}")
    return pd.concat([pm[cols], rm[cols]], ignore_index=True)
