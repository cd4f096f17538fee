"""Queries of the SEAM distributions page (and the overview's headline table, `seam_summary`).

Every function reads the per-sample metrics of one `Selection`. At a non-default SEAM definition
`seam_report` evaluates them once into a temp table that every chart then reads (`_rel`), instead of
recomputing them from the per-response scores per chart.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from analysis.queries.base import _df, _exec, add_t, binned_sql, relation_exists
from analysis.queries.selection import ALL, NONDEFAULT_MAX_SAMPLES, Selection

LENGTH_COLUMNS = {"mean_tokens": "mean_tokens", "gold_tokens": "gold_tokens"}


def _from(con, sel: Selection, params: dict, max_samples: int | None, _rel: str | None) -> str:
    return _rel or sel.source(params, con=con, max_samples=max_samples)


def seam_summary(con: duckdb.DuckDBPyConnection, sel: Selection = ALL, *,
                 max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """Mean per-sample metric per (PM, RM, variant) with a t 95% interval (clipped to the metric's range
    [0, 1]), n, median, and hack / preference rates. See `Selection.source` for sampling."""
    params: dict = {}
    col = sel.column
    if _rel is None and sel.is_default and not sel.datasets and relation_exists(con, "seam_group_stats"):
        # finalize's per-group statistics over all samples: the same numbers, without scanning seam_metrics
        params["metric"] = sel.metric
        df = _df(con, f"""
            SELECT policy, reward, variant, n, mean, sd, median, hack_rate, rm_prefers_gold, pm_prefers_gold
            FROM seam_group_stats WHERE metric = $metric AND {sel.where(params)} ORDER BY policy, reward, variant
        """, params)
        return add_t(df, bounds=(0.0, 1.0))
    src = _from(con, sel, params, max_samples, _rel)
    df = _df(con, f"""
        SELECT policy, reward, variant, count({col}) AS n, avg({col}) AS mean, stddev_samp({col}) AS sd,
               median({col}) AS median, avg(hack_rate) AS hack_rate,
               avg(CAST(rm_prefers_gold AS DOUBLE)) AS rm_prefers_gold,
               avg(CAST(pm_prefers_gold AS DOUBLE)) AS pm_prefers_gold
        FROM {src} WHERE {sel.where(params)} GROUP BY ALL ORDER BY policy, reward, variant
    """, params)
    return add_t(df, bounds=(0.0, 1.0))


def seam_histogram(con: duckdb.DuckDBPyConnection, sel: Selection = ALL, *, bins: int = 40,
                   nonzero_only: bool = False, log_bins: bool = False,
                   max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """Histogram bins computed in DuckDB, shared edges across groups.

    Columns: variant, policy, reward, bin, bin_lo, bin_hi, count, group_n, zeros (samples with the
    metric exactly 0 in the group; excluded from the bins when `nonzero_only` or `log_bins`).
    `log_bins`: log-spaced edges over the positive values, for a log x axis.
    """
    bins = max(1, min(int(bins), 400))
    params: dict = {"bins": bins}
    src = _from(con, sel, params, max_samples, _rel)
    col = sel.column
    ctes, hist = binned_sql("src", groups=("variant", "policy", "reward"), aggs="count(*) AS count",
                            where="x <> 0" if nonzero_only else "TRUE", log=log_bins)
    return _df(con, f"""
        WITH src AS (SELECT variant, policy, reward, {col} AS x FROM {src}
                     WHERE {sel.where(params)} AND {col} IS NOT NULL),
        grp AS (SELECT variant, policy, reward, count(*) AS group_n, count(*) FILTER (WHERE x = 0) AS zeros
                FROM src GROUP BY ALL),
        {ctes},
        h AS ({hist})
        SELECT h.*, g.group_n, g.zeros FROM h JOIN grp g USING (variant, policy, reward)
        ORDER BY variant, policy, reward, bin
    """, params)


def seam_quantiles(con: duckdb.DuckDBPyConnection, sel: Selection = ALL, *, n_q: int = 101,
                   max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """Quantiles per group (for the ECDF and box plots) — exact, computed in DuckDB.

    Columns: variant, policy, reward, q, value, n. The ECDF is (value, q).
    """
    n_q = max(3, min(int(n_q), 1001))
    params: dict = {"qs": [i / (n_q - 1) for i in range(n_q)]}
    src = _from(con, sel, params, max_samples, _rel)
    col = sel.column
    return _df(con, f"""
        WITH g AS (SELECT variant, policy, reward, count(*) AS n,
                          quantile_cont({col}, $qs::DOUBLE[]) AS vals
                   FROM {src} WHERE {sel.where(params)} AND {col} IS NOT NULL GROUP BY ALL)
        SELECT variant, policy, reward, unnest($qs::DOUBLE[]) AS q, unnest(vals) AS value, n
        FROM g ORDER BY variant, policy, reward, q
    """, params)


def seam_sample(con: duckdb.DuckDBPyConnection, sel: Selection = ALL, *, max_rows: int = 20000,
                seed: int = 0, max_samples: int | None = NONDEFAULT_MAX_SAMPLES,
                _rel: str | None = None) -> pd.DataFrame:
    """A reservoir sample (≤ max_rows, SQL `USING SAMPLE`) of per-sample values, for violin plots.

    Columns: variant, policy, reward, value. The caller shows len() as the n behind the shape.
    """
    max_rows = max(1, min(int(max_rows), 200_000))
    params: dict = {}
    src = _from(con, sel, params, max_samples, _rel)
    col = sel.column
    return _df(con, f"""
        SELECT variant, policy, reward, v AS value FROM (
            SELECT variant, policy, reward, {col} AS v FROM {src} WHERE {sel.where(params)} AND {col} IS NOT NULL
        ) USING SAMPLE reservoir({max_rows} ROWS) REPEATABLE ({int(seed)})
    """, params)


def variant_correlation(con: duckdb.DuckDBPyConnection, sel: Selection = ALL, *, policy: str, reward: str,
                        max_rows: int = 50_000, seed: int = 0, max_samples: int | None = NONDEFAULT_MAX_SAMPLES,
                        _rel: str | None = None) -> tuple[pd.DataFrame, int]:
    """Spearman correlation of the per-sample metric between all variants, for one (PM, RM).

    Pivot per sample in SQL, then a reservoir sample of ≤ max_rows samples (`USING SAMPLE`), ranked in
    pandas. Returns (correlation matrix, n samples used). Pairs use the samples that have both variants.
    """
    max_rows = max(10, min(int(max_rows), 200_000))
    sel = sel.but(variants=(), policies=(policy,), rewards=(reward,))
    params: dict = {}
    src = _from(con, sel, params, max_samples, _rel)
    where = sel.where(params)
    variants = list(_df(con, f"SELECT DISTINCT variant FROM {src} WHERE {where} ORDER BY 1", params)["variant"])
    if len(variants) < 2:
        return pd.DataFrame(), 0
    cols = []
    for i, v in enumerate(variants):
        params[f"v{i}"] = v
        cols.append(f"max({sel.column}) FILTER (WHERE variant = $v{i}) AS c{i}")
    df = _df(con, f"""
        SELECT * FROM (
            SELECT sample_id, {', '.join(cols)} FROM {src} WHERE {where} GROUP BY sample_id
        ) USING SAMPLE reservoir({max_rows} ROWS) REPEATABLE ({int(seed)})
    """, params)
    data = df.drop(columns="sample_id")
    data.columns = variants
    return data.corr(method="spearman", min_periods=3), len(df)


def seam_by_length(con: duckdb.DuckDBPyConnection, sel: Selection = ALL, *, policy: str, reward: str,
                   length: str = "mean_tokens", bins: int = 15, max_samples: int | None = NONDEFAULT_MAX_SAMPLES,
                   _rel: str | None = None) -> pd.DataFrame:
    """Mean metric per response-length bin (equal width over [min, 99th percentile]), per variant.

    `length`: 'mean_tokens' (mean PM tokens of the worse responses) or 'gold_tokens'.
    Columns: variant, bin, len_lo, len_hi, n, mean, sd, lo, hi (t 95%).
    """
    bins = max(2, min(int(bins), 100))
    sel = sel.but(policies=(policy,), rewards=(reward,))
    params: dict = {"bins": bins}
    src = _from(con, sel, params, max_samples, _rel)
    col = sel.column
    lcol = LENGTH_COLUMNS.get(length)
    if lcol is None:
        raise ValueError(f"unknown length column {length!r}")
    ctes, hist = binned_sql("src", groups=("variant",), range_sql="min(x) AS lo, quantile_cont(x, 0.99) AS hi",
                            aggs="count(*) AS n, avg(v) AS mean, stddev_samp(v) AS sd", edges=("len_lo", "len_hi"))
    df = _df(con, f"""
        WITH src AS (SELECT variant, {col} AS v, CAST({lcol} AS DOUBLE) AS x FROM {src}
                     WHERE {sel.where(params)} AND {col} IS NOT NULL AND {lcol} IS NOT NULL),
        {ctes}
        {hist}
    """, params)
    return add_t(df)


def seam_report(con: duckdb.DuckDBPyConnection, sel: Selection = ALL, *, plot: str = "histogram",
                bins: int = 40, nonzero_only: bool = True, log_bins: bool = False, n_q: int = 101,
                sample_rows: int = 20_000,
                corr_policy: str | None = None, corr_reward: str | None = None, length: str = "mean_tokens",
                length_bins: int = 15, max_samples: int | None = NONDEFAULT_MAX_SAMPLES) -> dict:
    """Everything the distributions page shows, in one connection.

    On the precomputed grid of SEAM definitions (analysis/storage/aggregates.py) and at the page's sample
    size, every chart reads finalize's per-sample rows on the hash sample of ~max_samples samples (all of
    them on a smaller DB), so the cost does not grow with the DB. At any other non-default definition the
    per-sample metrics are evaluated once (filtered, hash-sampled) into a temp table that every chart
    then reads (a custom slice: the app shows it as computing, with a time bound). Keys: summary, plot ('histogram' | 'ECDF' | 'box' |
    'violin' data), corr, corr_n, by_length.
    """
    rel = sel.stored_rows(con, max_samples)
    if rel is None and not sel.is_default:
        pols = sorted(set(sel.policies) | ({corr_policy} if corr_policy else set()))
        rews = sorted(set(sel.rewards) | ({corr_reward} if corr_reward else set()))
        params: dict = {}
        src = sel.but(variants=(), policies=pols, rewards=rews).source(params, con=con, max_samples=max_samples)
        _exec(con, f"CREATE OR REPLACE TEMP TABLE _seam_rows AS SELECT * FROM {src}", params)
        rel = "_seam_rows"
    # the default definition's summary is over all samples (finalize's seam_group_stats); charts read rel
    out: dict = {"summary": seam_summary(con, sel, _rel=None if sel.is_default else rel)}
    if plot == "histogram":
        out["plot"] = seam_histogram(con, sel, bins=bins, nonzero_only=nonzero_only, log_bins=log_bins,
                                     _rel=rel)
    elif plot in ("ECDF", "box"):
        out["plot"] = seam_quantiles(con, sel, n_q=n_q, _rel=rel)
    elif plot == "violin":
        out["plot"] = seam_sample(con, sel, max_rows=sample_rows, _rel=rel)
    else:
        raise ValueError(f"unknown plot {plot!r}")
    if corr_policy and corr_reward:
        out["corr"], out["corr_n"] = variant_correlation(con, sel, policy=corr_policy, reward=corr_reward, _rel=rel)
        out["by_length"] = seam_by_length(con, sel, policy=corr_policy, reward=corr_reward, length=length,
                                          bins=length_bins, _rel=rel)
    return out
