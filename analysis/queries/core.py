"""Read interface of the results DB: every query the dashboard runs, parameterized, aggregated in DuckDB.

Why one module: the dashboard must stay interactive at 1M samples and must never interpolate user input
into SQL. Keeping all read SQL here makes both properties reviewable in one place, lets
`benchmarks/bench_queries.py` time exactly what the pages run, and gives notebooks a documented API
(each function takes an open DuckDB connection and returns a small pandas DataFrame or dict).

Conventions
- Functions take `con` first (open it with `analysis.storage.store.connect(db, read_only=True)` and close it
  promptly: a precompute needs the file lock between its short write transactions).
- User-supplied values travel as named parameters (`$name`). The only things formatted into SQL text are
  whitelisted identifiers (metric / sort columns looked up in dicts below) and validated integers
  (`USING SAMPLE n ROWS`, which DuckDB does not parameterize).
- Results are aggregates (histogram bins, quantiles, grouped means) or one page of rows; never a whole
  table. Estimates come with `n` and a 95% interval (Wilson for proportions, Student t for means).
- `alpha` / `tau` select the SEAM definition (SPEC §3). The default (alpha = 1, tau = 0) reads the
  materialised `seam_metrics`; anything else evaluates the `seam_at(alpha, tau)` macro, filtered so
  DuckDB pushes the variant / model predicates down into its scans.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import duckdb
import pandas as pd

from analysis.stats.metrics import wilson_bounds

# ---------------------------------------------------------------------------------------------------
# statistics helpers (kept here so every page computes intervals the same way)

Z95 = 1.959963984540054


def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float, float]:
    """Proportion k/n with its Wilson score interval (analysis.stats.metrics). Returns (p, lo, hi); NaNs when n == 0.

    Wilson rather than the normal approximation because spot-check counts are small and rates can sit
    near 0 or 1, where the Wald interval collapses or leaves [0, 1].
    """
    lo, hi = wilson_bounds(k, n, z)
    return (k / n if n > 0 else math.nan, lo, hi)


def t_interval(mean: float, sd: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a mean from (mean, sample sd, n); NaNs when n < 2."""
    if n is None or n < 2 or sd is None or math.isnan(sd):
        return (math.nan, math.nan)
    from scipy.stats import t
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def _add_wilson(df: pd.DataFrame, k: str, n: str, prefix: str) -> pd.DataFrame:
    vals = [wilson(a, b) for a, b in zip(df[k].astype(float), df[n].astype(float))]
    df[prefix] = [v[0] for v in vals]
    df[prefix + "_lo"] = [v[1] for v in vals]
    df[prefix + "_hi"] = [v[2] for v in vals]
    return df


def _add_t(df: pd.DataFrame, mean: str = "mean", sd: str = "sd", n: str = "n",
           bounds: tuple[float, float] | None = None) -> pd.DataFrame:
    """Add t 95% interval columns lo / hi; `bounds` clips them to the quantity's possible range."""
    iv = [t_interval(m, s, c) for m, s, c in zip(df[mean], df[sd], df[n])]
    lo = [v[0] for v in iv]
    hi = [v[1] for v in iv]
    if bounds is not None:
        lo = [x if math.isnan(x) else max(bounds[0], x) for x in lo]
        hi = [x if math.isnan(x) else min(bounds[1], x) for x in hi]
    df["lo"] = lo
    df["hi"] = hi
    return df


# ---------------------------------------------------------------------------------------------------
# execution helpers

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

# Whitelists: the only identifiers that are ever formatted into SQL text.
METRICS = {"seam": "seam", "seam_rel": "seam_rel", "hack_rate": "hack_rate"}
LENGTH_COLUMNS = {"mean_tokens": "mean_tokens", "gold_tokens": "gold_tokens"}
BROWSER_SORTS = {"seam": "m.seam", "seam_rel": "m.seam_rel", "hack_rate": "m.hack_rate",
                 "mean_tokens": "m.mean_tokens", "sample_id": "m.sample_id"}
REQUIRED_TABLES = ("samples", "responses", "pm_scores", "rm_scores", "seam_metrics")


def _exec(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None):
    """Execute `sql` with only the named parameters it uses (DuckDB rejects extra ones)."""
    used = set(_PARAM.findall(sql))
    p = {k: v for k, v in (params or {}).items() if k in used}
    missing = used - set(p)
    if missing:
        raise KeyError(f"missing SQL parameters {sorted(missing)}")
    return con.execute(sql, p)


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run a parameterized query -> DataFrame (fully fetched, so the connection is free again)."""
    return _exec(con, sql, params).df()


def _is_default(alpha: float, tau: float) -> bool:
    return abs(float(alpha) - 1.0) < 1e-12 and float(tau) == 0.0


SAMPLE_MOD = 1_000_003
# Non-default SEAM definitions are recomputed from the per-response scores (tens of millions of rows at
# 1M samples); above this many samples the distribution page evaluates them on a deterministic hash
# sample of samples (the same one for every chart, n shown), which keeps it interactive.
NONDEFAULT_MAX_SAMPLES = 100_000


def _sample_cond(con: duckdb.DuckDBPyConnection | None, max_samples: int | None, params: dict,
                 col: str = "sample_id") -> str:
    """`AND hash(sample_id) % M < keep` restricting to ~max_samples samples, or '' when not needed."""
    if con is None or not max_samples:
        return ""
    n_total = int(_df(con, "SELECT count(*) AS n FROM samples")["n"][0])
    if n_total <= max_samples:
        return ""
    params["s_mod"] = SAMPLE_MOD
    params["s_keep"] = max(1, int(SAMPLE_MOD * max_samples / n_total))
    return f"AND hash({col}) % $s_mod < $s_keep"


def _scored_sql(params: dict, *, alpha: float, variants: Sequence[str] | None = None,
                policies: Sequence[str] | None = None, rewards: Sequence[str] | None = None,
                sample_cond: str = "") -> str:
    """Worse responses joined with their sample's gold response under the same PM and RM.

    Mirrors `scored_vs_gold(alpha)` of analysis/sql/metrics.sql (tests check they agree) but applies the
    variant / model / sample filters to the base-table scans before the joins, which the macro's shared
    CTE prevents DuckDB from doing — the difference between seconds and a minute at 1M samples.
    """
    params["alpha"] = float(alpha)
    vcond = _in("variant", "sv_variants", variants, params)
    pcond = _in("p.policy", "sv_policies", policies, params)
    rcond = _in("s.reward", "sv_rewards", rewards, params)
    return f"""(
        WITH r AS (SELECT response_id, sample_id, variant FROM responses
                   WHERE variant <> 'policy' AND (variant = 'gold' OR {vcond}) {sample_cond}),
        sc AS (SELECT r.sample_id, r.variant, r.response_id, p.policy, s.reward,
                      p.logprob_sum / pow(greatest(p.n_tokens, 1), $alpha) AS lp, p.n_tokens, s.score
               FROM r JOIN pm_scores p USING (response_id) JOIN rm_scores s USING (response_id)
               WHERE {pcond} AND {rcond})
        SELECT w.sample_id, w.variant, w.response_id, w.policy, w.reward, w.lp, w.n_tokens, w.score,
               g.lp AS lp_gold, g.score AS score_gold, g.n_tokens AS n_tokens_gold
        FROM sc w JOIN sc g ON g.sample_id = w.sample_id AND g.policy = w.policy AND g.reward = w.reward
                           AND g.variant = 'gold'
        WHERE w.variant <> 'gold')"""


def _seam_at_sql(params: dict, *, alpha: float, tau: float, **filters) -> str:
    """Per-sample metrics at (alpha, tau): mirrors the `seam_at(alpha, tau)` macro over `_scored_sql`.

    The soft indicator's exponent is clamped at 700 (defensive: DuckDB returns inf there, which the
    sigmoid maps to 0 anyway, so results equal the macro's)."""
    params["tau"] = max(0.0, float(tau))
    scored = _scored_sql(params, alpha=alpha, **filters)
    return f"""(
        SELECT sample_id, variant, policy, reward,
               avg(w * hack) AS seam, sum(w * hack) / nullif(sum(w), 0) AS seam_rel, avg(hack) AS hack_rate,
               count(*)::INTEGER AS k, bool_and(lp_gold > lp) AS pm_prefers_gold,
               bool_and(score_gold > score) AS rm_prefers_gold, avg(n_tokens) AS mean_tokens,
               any_value(n_tokens_gold) AS gold_tokens
        FROM (SELECT *, exp(lp) AS w,
                     CASE WHEN $tau > 0 THEN 1.0 / (1.0 + exp(least(-(score - score_gold) / $tau, 700)))
                          ELSE CAST(score > score_gold AS DOUBLE) END AS hack
              FROM {scored})
        GROUP BY sample_id, variant, policy, reward)"""


def _seam_source(alpha: float, tau: float, params: dict, *, con: duckdb.DuckDBPyConnection | None = None,
                 variants: Sequence[str] | None = None, policies: Sequence[str] | None = None,
                 rewards: Sequence[str] | None = None, max_samples: int | None = None) -> str:
    """FROM-clause for per-sample metrics at (alpha, tau); adds the parameters it needs to `params`.

    The default definition reads the materialised `seam_metrics` (exact, fast). Any other is computed
    with the filters pushed into the scans and, when `con` and `max_samples` are given and the DB is
    larger, on a deterministic hash sample of ~max_samples samples.
    """
    if _is_default(alpha, tau):
        return "seam_metrics"
    cond = _sample_cond(con, max_samples, params)
    return _seam_at_sql(params, alpha=alpha, tau=tau, variants=variants, policies=policies, rewards=rewards,
                        sample_cond=cond)


def _in(col: str, name: str, values: Sequence[str] | None, params: dict) -> str:
    """`col IN (...)` for an optional list filter (None or empty = no filter)."""
    if not values:
        return "TRUE"
    values = list(values)
    if len(values) == 1:
        params[name] = values[0]
        return f"{col} = ${name}"
    params[name] = values
    return f"list_contains(${name}::VARCHAR[], {col})"


def _metric(metric: str) -> str:
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; one of {sorted(METRICS)}") from None


# ---------------------------------------------------------------------------------------------------
# what the DB holds

def relation_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether a table or view `name` exists (optional relations written by later experiments)."""
    df = _df(con, "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = $n AND NOT temporary"
                  " UNION ALL SELECT count(*) FROM duckdb_views() WHERE view_name = $n AND NOT temporary",
             {"n": name})
    return bool(df["n"].sum() > 0)


def db_status(con: duckdb.DuckDBPyConnection) -> dict:
    """{'missing': [required tables absent], 'samples': n, 'metrics': n} — the app's "is it usable" check."""
    present = set(_df(con, "SELECT table_name FROM duckdb_tables() WHERE NOT temporary")["table_name"])
    missing = [t for t in REQUIRED_TABLES if t not in present]
    out = {"missing": missing, "samples": 0, "metrics": 0}
    if not missing:
        c = _df(con, "SELECT (SELECT count(*) FROM samples) AS s, (SELECT count(*) FROM seam_metrics) AS m")
        out["samples"], out["metrics"] = int(c["s"][0]), int(c["m"][0])
    return out


def table_counts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Row count of every base table that exists (table, rows)."""
    names = ["datasets", "samples", "rejects", "responses", "models", "pm_scores", "rm_scores",
             "prompt_embeddings", "prompt_map", "runs", "rlhf_results", "seam_metrics"]
    present = set(_df(con, "SELECT table_name FROM duckdb_tables() WHERE NOT temporary")["table_name"])
    names = [n for n in names if n in present]
    if not names:
        return pd.DataFrame(columns=["table", "rows"])
    # names come from the fixed list above, never from user input
    sql = " UNION ALL ".join(f"SELECT '{n}' AS table, count(*) AS rows FROM {n}" for n in names)
    return _df(con, sql)


def datasets_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per dataset: format, source, samples, distinct sub-sources, rejects."""
    return _df(con, """
        WITH s AS (SELECT dataset, count(*) AS samples, count(DISTINCT source) AS sources
                   FROM samples GROUP BY dataset),
             r AS (SELECT dataset, count(*) AS rejects FROM rejects GROUP BY dataset),
             names AS (SELECT dataset FROM datasets UNION SELECT dataset FROM s UNION SELECT dataset FROM r)
        SELECT n.dataset, d.format, d.source, coalesce(s.samples, 0) AS samples,
               coalesce(s.sources, 0) AS sources, coalesce(r.rejects, 0) AS rejects
        FROM names n LEFT JOIN datasets d USING (dataset) LEFT JOIN s USING (dataset) LEFT JOIN r USING (dataset)
        ORDER BY n.dataset
    """)


def models_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every PM / RM that scored something (or is registered): model, role, scored responses, resolved path."""
    return _df(con, """
        WITH used AS (
            SELECT policy AS model, 'policy' AS role, count(*) AS scored FROM pm_scores GROUP BY 1
            UNION ALL
            SELECT reward, 'reward', count(*) FROM rm_scores GROUP BY 1
        )
        SELECT coalesce(u.model, m.model) AS model, coalesce(u.role, m.role) AS role,
               coalesce(u.scored, 0) AS scored, m.resolved, m.sha256
        FROM used u FULL OUTER JOIN models m ON m.model = u.model AND m.role = u.role
        ORDER BY role, model
    """)


def variant_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per response variant: responses, samples that have it, responses per sample."""
    return _df(con, """
        SELECT variant, count(*) AS responses, count(DISTINCT sample_id) AS samples,
               round(count(*) / count(DISTINCT sample_id), 2) AS per_sample
        FROM responses GROUP BY variant
        ORDER BY CASE variant WHEN 'gold' THEN 0 WHEN 'policy' THEN 9 ELSE 1 END, variant
    """)


def reject_reasons(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Rejected input rows grouped by (dataset, reason)."""
    return _df(con, "SELECT dataset, reason, count(*) AS n FROM rejects GROUP BY ALL ORDER BY n DESC, dataset, reason")


def recent_runs(con: duckdb.DuckDBPyConnection, limit: int = 5) -> pd.DataFrame:
    """Most recent CLI runs with their status and summary JSON."""
    return _df(con, """
        SELECT run_id, command, status, started_at, finished_at,
               CAST(summary AS VARCHAR) AS summary
        FROM runs ORDER BY started_at DESC NULLS LAST, run_id DESC LIMIT $limit
    """, {"limit": int(limit)})


def filter_options(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Distinct values for the filter widgets: variants (worse ones), policies, rewards, datasets, sources."""
    out = {}
    for key, sql in {
        "variants": "SELECT DISTINCT variant AS v FROM seam_metrics ORDER BY 1",
        "policies": "SELECT DISTINCT policy AS v FROM pm_scores ORDER BY 1",
        "rewards": "SELECT DISTINCT reward AS v FROM rm_scores ORDER BY 1",
        "datasets": "SELECT DISTINCT dataset AS v FROM samples ORDER BY 1",
        "sources": "SELECT DISTINCT source AS v FROM samples WHERE source IS NOT NULL ORDER BY 1 LIMIT 500",
    }.items():
        out[key] = [str(v) for v in _df(con, sql)["v"]]
    # models in the order they were registered (the CLI order, weakest to strongest by convention)
    for key, role in (("policies", "policy"), ("rewards", "reward")):
        reg = list(_df(con, "SELECT model FROM models WHERE role = $r ORDER BY rowid", {"r": role})["model"])
        out[key] = [m for m in reg if m in out[key]] + [m for m in out[key] if m not in reg]
    return out


# ---------------------------------------------------------------------------------------------------
# headline figures (Overview)

def rm_accuracy(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """RM accuracy on dataset pairs (gold vs each worse response), per RM and worse-variant.

    Columns: reward, variant, n, correct, wrong, ties, accuracy (+ _lo/_hi Wilson 95%), mismatch
    (= wrong / n, + _lo/_hi). Ties count in n and in neither correct nor wrong, and are shown.
    Variant 'rejected' is the classic RM accuracy on the dataset's own human pairs.
    """
    df = _df(con, "SELECT reward, variant, n, correct, wrong, ties FROM rm_accuracy ORDER BY reward, variant")
    df = _add_wilson(df, "correct", "n", "accuracy")
    return _add_wilson(df, "wrong", "n", "mismatch")


def seam_summary(con: duckdb.DuckDBPyConnection, alpha: float = 1.0, tau: float = 0.0,
                 metric: str = "seam", *, variants: Sequence[str] | None = None,
                 policies: Sequence[str] | None = None, rewards: Sequence[str] | None = None,
                 max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """Mean per-sample metric per (PM, RM, variant) with a t 95% interval (clipped to the metric's range
    [0, 1]), n, median, and hack / preference rates. Optional filters; see `_seam_source` for sampling."""
    params: dict = {}
    src = _rel or _seam_source(alpha, tau, params, con=con, variants=variants, policies=policies, rewards=rewards,
                       max_samples=max_samples)
    col = _metric(metric)
    where = " AND ".join([_in("variant", "variants", variants, params), _in("policy", "policies", policies, params),
                          _in("reward", "rewards", rewards, params)])
    df = _df(con, f"""
        SELECT policy, reward, variant, count({col}) AS n, avg({col}) AS mean, stddev_samp({col}) AS sd,
               median({col}) AS median, avg(hack_rate) AS hack_rate,
               avg(CAST(rm_prefers_gold AS DOUBLE)) AS rm_prefers_gold,
               avg(CAST(pm_prefers_gold AS DOUBLE)) AS pm_prefers_gold
        FROM {src} WHERE {where} GROUP BY ALL ORDER BY policy, reward, variant
    """, params)
    return _add_t(df, bounds=(0.0, 1.0))


# The RM scores of every labeled response, read in one scan of rm_scores (not one per side of the pair).
_LABEL_SCORES = """ids AS (SELECT a_id AS id FROM _labels_in UNION SELECT b_id FROM _labels_in),
            sc AS (SELECT response_id, reward, score FROM rm_scores WHERE response_id IN (SELECT id FROM ids))"""


def label_mismatch(con: duckdb.DuckDBPyConnection, labels: pd.DataFrame) -> pd.DataFrame:
    """RM mismatch rate against hand labels, per (pair kind, RM).

    `labels`: one row per labeled pair with columns a_id, b_id, label ('a' | 'b' | 'tie'), kind
    ('policy' for two PM samples of one prompt, 'dataset' for gold vs a worse response) — the consensus
    per pair from `analysis.storage.labels.consensus`. A pair is a mismatch when the RM scores the response the
    label prefers strictly lower. Columns: kind, reward, n (pairs with a strict label), wrong, rm_ties,
    label_ties, mismatch (+ _lo/_hi Wilson 95%).
    """
    cols = ["kind", "reward", "n", "wrong", "rm_ties", "label_ties", "mismatch", "mismatch_lo", "mismatch_hi"]
    if labels is None or len(labels) == 0:
        return pd.DataFrame(columns=cols)
    lab = labels[["a_id", "b_id", "label", "kind"]].copy()
    con.register("_labels_in", lab)
    try:
        df = _df(con, f"""
            WITH {_LABEL_SCORES}
            SELECT l.kind, ra.reward,
                   count(*) FILTER (WHERE l.label IN ('a', 'b')) AS n,
                   count(*) FILTER (WHERE (l.label = 'a' AND ra.score < rb.score)
                                       OR (l.label = 'b' AND rb.score < ra.score)) AS wrong,
                   count(*) FILTER (WHERE l.label IN ('a', 'b') AND ra.score = rb.score) AS rm_ties,
                   count(*) FILTER (WHERE l.label = 'tie') AS label_ties
            FROM _labels_in l
            JOIN sc ra ON ra.response_id = l.a_id
            JOIN sc rb ON rb.response_id = l.b_id AND rb.reward = ra.reward
            GROUP BY ALL ORDER BY kind, reward
        """)
    finally:
        con.unregister("_labels_in")
    return _add_wilson(df, "wrong", "n", "mismatch")[cols]


def label_disagreements(con: duckdb.DuckDBPyConnection, labels: pd.DataFrame, reward: str,
                        limit: int = 200) -> pd.DataFrame:
    """Hand-labeled pairs where `reward` ranks the pair against the label (for the mismatch browser)."""
    cols = ["sample_id", "kind", "a_id", "b_id", "label", "score_a", "score_b", "prompt"]
    if labels is None or len(labels) == 0:
        return pd.DataFrame(columns=cols)
    con.register("_labels_in", labels[["a_id", "b_id", "label", "kind"]].copy())
    try:
        return _df(con, f"""
            WITH {_LABEL_SCORES}
            SELECT r.sample_id, l.kind, l.a_id, l.b_id, l.label, ra.score AS score_a, rb.score AS score_b,
                   left(s.prompt, 160) AS prompt
            FROM _labels_in l
            JOIN sc ra ON ra.response_id = l.a_id AND ra.reward = $reward
            JOIN sc rb ON rb.response_id = l.b_id AND rb.reward = $reward
            JOIN responses r ON r.response_id = l.a_id
            JOIN samples s ON s.sample_id = r.sample_id
            WHERE (l.label = 'a' AND ra.score < rb.score) OR (l.label = 'b' AND rb.score < ra.score)
            ORDER BY abs(ra.score - rb.score) DESC LIMIT $limit
        """, {"reward": reward, "limit": int(limit)})
    finally:
        con.unregister("_labels_in")


# ---------------------------------------------------------------------------------------------------
# SEAM distributions

def seam_histogram(con: duckdb.DuckDBPyConnection, *, metric: str = "seam", alpha: float = 1.0,
                   tau: float = 0.0, variants: Sequence[str] | None = None,
                   policies: Sequence[str] | None = None, rewards: Sequence[str] | None = None,
                   bins: int = 40, nonzero_only: bool = False,
        max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """Histogram bins computed in DuckDB, shared edges across groups.

    Columns: variant, policy, reward, bin, bin_lo, bin_hi, count, group_n, zeros (samples with the
    metric exactly 0 in the group; excluded from the bins when `nonzero_only`).
    """
    bins = max(1, min(int(bins), 400))
    params: dict = {"bins": bins}
    src = _rel or _seam_source(alpha, tau, params, con=con, variants=variants, policies=policies, rewards=rewards,
                       max_samples=max_samples)
    col = _metric(metric)
    where = " AND ".join([_in("variant", "variants", variants, params), _in("policy", "policies", policies, params),
                          _in("reward", "rewards", rewards, params), f"{col} IS NOT NULL"])
    nz = "AND v <> 0" if nonzero_only else ""
    df = _df(con, f"""
        WITH src AS (SELECT variant, policy, reward, {col} AS v FROM {src} WHERE {where}),
        grp AS (SELECT variant, policy, reward, count(*) AS group_n, count(*) FILTER (WHERE v = 0) AS zeros
                FROM src GROUP BY ALL),
        rng AS (SELECT min(v) AS lo, max(v) AS hi FROM src WHERE TRUE {nz}),
        b AS (SELECT variant, policy, reward,
                     CAST(least(greatest(floor((v - lo) / nullif((hi - lo) / $bins, 0)), 0), $bins - 1)
                          AS INTEGER) AS bin, lo, hi
              FROM src, rng WHERE TRUE {nz}),
        c AS (SELECT variant, policy, reward, coalesce(bin, 0) AS bin, any_value(lo) AS lo, any_value(hi) AS hi,
                     count(*) AS count FROM b GROUP BY ALL)
        SELECT c.variant, c.policy, c.reward, c.bin,
               c.lo + c.bin * (c.hi - c.lo) / $bins AS bin_lo,
               CASE WHEN c.hi = c.lo THEN c.hi ELSE c.lo + (c.bin + 1) * (c.hi - c.lo) / $bins END AS bin_hi,
               c.count, g.group_n, g.zeros
        FROM c JOIN grp g USING (variant, policy, reward)
        ORDER BY variant, policy, reward, bin
    """, params)
    return df


def seam_quantiles(con: duckdb.DuckDBPyConnection, *, metric: str = "seam", alpha: float = 1.0,
                   tau: float = 0.0, variants: Sequence[str] | None = None,
                   policies: Sequence[str] | None = None, rewards: Sequence[str] | None = None,
                   n_q: int = 101,
        max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """Quantiles per group (for the ECDF and box plots) — exact, computed in DuckDB.

    Columns: variant, policy, reward, q, value, n. The ECDF is (value, q).
    """
    n_q = max(3, min(int(n_q), 1001))
    qs = [i / (n_q - 1) for i in range(n_q)]
    params: dict = {"qs": qs}
    src = _rel or _seam_source(alpha, tau, params, con=con, variants=variants, policies=policies, rewards=rewards,
                       max_samples=max_samples)
    col = _metric(metric)
    where = " AND ".join([_in("variant", "variants", variants, params), _in("policy", "policies", policies, params),
                          _in("reward", "rewards", rewards, params), f"{col} IS NOT NULL"])
    return _df(con, f"""
        WITH g AS (SELECT variant, policy, reward, count(*) AS n,
                          quantile_cont({col}, $qs::DOUBLE[]) AS vals
                   FROM {src} WHERE {where} GROUP BY ALL)
        SELECT variant, policy, reward, unnest($qs::DOUBLE[]) AS q, unnest(vals) AS value, n
        FROM g ORDER BY variant, policy, reward, q
    """, params)


def seam_sample(con: duckdb.DuckDBPyConnection, *, metric: str = "seam", alpha: float = 1.0, tau: float = 0.0,
                variants: Sequence[str] | None = None, policies: Sequence[str] | None = None,
                rewards: Sequence[str] | None = None, max_rows: int = 20000, seed: int = 0,
        max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """A reservoir sample (≤ max_rows, SQL `USING SAMPLE`) of per-sample values, for violin plots.

    Columns: variant, policy, reward, value. The caller shows len() as the n behind the shape.
    """
    max_rows = max(1, min(int(max_rows), 200_000))
    seed = int(seed)
    params: dict = {}
    src = _rel or _seam_source(alpha, tau, params, con=con, variants=variants, policies=policies, rewards=rewards,
                       max_samples=max_samples)
    col = _metric(metric)
    where = " AND ".join([_in("variant", "variants", variants, params), _in("policy", "policies", policies, params),
                          _in("reward", "rewards", rewards, params), f"{col} IS NOT NULL"])
    return _df(con, f"""
        SELECT variant, policy, reward, v AS value FROM (
            SELECT variant, policy, reward, {col} AS v FROM {src} WHERE {where}
        ) USING SAMPLE reservoir({max_rows} ROWS) REPEATABLE ({seed})
    """, params)


def variant_correlation(con: duckdb.DuckDBPyConnection, *, policy: str, reward: str, metric: str = "seam",
                        alpha: float = 1.0, tau: float = 0.0, max_rows: int = 50_000,
                        seed: int = 0, max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> tuple[pd.DataFrame, int]:
    """Spearman correlation of the per-sample metric between variants, for one (PM, RM).

    Pivot per sample in SQL, then a reservoir sample of ≤ max_rows samples (`USING SAMPLE`), ranked in
    pandas. Returns (correlation matrix, n samples used). Pairs use the samples that have both variants.
    """
    max_rows = max(10, min(int(max_rows), 200_000))
    params: dict = {"policy": policy, "reward": reward}
    src = _rel or _seam_source(alpha, tau, params, con=con, policies=[policy], rewards=[reward], max_samples=max_samples)
    col = _metric(metric)
    variants = list(_df(con, f"SELECT DISTINCT variant FROM {src} WHERE policy = $policy AND reward = $reward"
                             " ORDER BY 1", params)["variant"])
    if len(variants) < 2:
        return pd.DataFrame(), 0
    sel = []
    for i, v in enumerate(variants):
        params[f"v{i}"] = v
        sel.append(f"max({col}) FILTER (WHERE variant = $v{i}) AS c{i}")
    df = _df(con, f"""
        SELECT * FROM (
            SELECT sample_id, {', '.join(sel)} FROM {src}
            WHERE policy = $policy AND reward = $reward GROUP BY sample_id
        ) USING SAMPLE reservoir({max_rows} ROWS) REPEATABLE ({int(seed)})
    """, params)
    n = len(df)
    data = df.drop(columns="sample_id")
    data.columns = variants
    return data.corr(method="spearman", min_periods=3), n


def seam_by_length(con: duckdb.DuckDBPyConnection, *, policy: str, reward: str, metric: str = "seam",
                   alpha: float = 1.0, tau: float = 0.0, variants: Sequence[str] | None = None,
                   length: str = "mean_tokens", bins: int = 15,
                   max_samples: int | None = NONDEFAULT_MAX_SAMPLES, _rel: str | None = None) -> pd.DataFrame:
    """Mean metric per response-length bin (equal width over [min, 99th percentile]), per variant.

    `length`: 'mean_tokens' (mean PM tokens of the worse responses) or 'gold_tokens'.
    Columns: variant, bin, len_lo, len_hi, n, mean, sd, lo, hi (t 95%).
    """
    bins = max(2, min(int(bins), 100))
    params: dict = {"policy": policy, "reward": reward, "bins": bins}
    src = _rel or _seam_source(alpha, tau, params, con=con, variants=variants, policies=[policy], rewards=[reward],
                       max_samples=max_samples)
    col = _metric(metric)
    lcol = LENGTH_COLUMNS.get(length)
    if lcol is None:
        raise ValueError(f"unknown length column {length!r}")
    where = " AND ".join(["policy = $policy", "reward = $reward", _in("variant", "variants", variants, params),
                          f"{col} IS NOT NULL", f"{lcol} IS NOT NULL"])
    df = _df(con, f"""
        WITH src AS (SELECT variant, {col} AS v, CAST({lcol} AS DOUBLE) AS l FROM {src} WHERE {where}),
        rng AS (SELECT min(l) AS lo, quantile_cont(l, 0.99) AS hi FROM src),
        b AS (SELECT variant, v, lo, hi,
                     coalesce(CAST(least(greatest(floor((l - lo) / nullif((hi - lo) / $bins, 0)), 0), $bins - 1)
                                   AS INTEGER), 0) AS bin
              FROM src, rng)
        SELECT variant, bin,
               any_value(lo) + bin * (any_value(hi) - any_value(lo)) / $bins AS len_lo,
               any_value(lo) + (bin + 1) * (any_value(hi) - any_value(lo)) / $bins AS len_hi,
               count(*) AS n, avg(v) AS mean, stddev_samp(v) AS sd
        FROM b GROUP BY variant, bin ORDER BY variant, bin
    """, params)
    return _add_t(df)


def seam_report(con: duckdb.DuckDBPyConnection, *, metric: str = "seam", alpha: float = 1.0, tau: float = 0.0,
                variants: Sequence[str] | None = None, policies: Sequence[str] | None = None,
                rewards: Sequence[str] | None = None, plot: str = "histogram", bins: int = 40,
                nonzero_only: bool = True, n_q: int = 101, sample_rows: int = 20_000, corr_policy: str | None = None,
                corr_reward: str | None = None, length: str = "mean_tokens", length_bins: int = 15,
                max_samples: int | None = NONDEFAULT_MAX_SAMPLES) -> dict:
    """Everything the distributions page shows, in one connection.

    At a non-default SEAM definition the per-sample metrics are evaluated once (filtered, hash-sampled
    to ~max_samples samples) into a temp table that every chart then reads, instead of recomputing
    them from the per-response scores per chart. Keys: summary, plot ('histogram' | 'ECDF' | 'box' |
    'violin' data), corr, corr_n, by_length.
    """
    pols = sorted(set(policies or []) | ({corr_policy} if corr_policy else set())) or None
    rews = sorted(set(rewards or []) | ({corr_reward} if corr_reward else set())) or None
    rel = None
    if not _is_default(alpha, tau):
        params: dict = {}
        src = _seam_source(alpha, tau, params, con=con, policies=pols, rewards=rews, max_samples=max_samples)
        _exec(con, f"CREATE OR REPLACE TEMP TABLE _seam_rows AS SELECT * FROM {src}", params)
        rel = "_seam_rows"
    common = dict(metric=metric, alpha=alpha, tau=tau, variants=variants, policies=policies, rewards=rewards,
                  _rel=rel)
    out: dict = {"summary": seam_summary(con, alpha, tau, metric, variants=variants, policies=policies,
                                         rewards=rewards, _rel=rel)}
    if plot == "histogram":
        out["plot"] = seam_histogram(con, bins=bins, nonzero_only=nonzero_only, **common)
    elif plot in ("ECDF", "box"):
        out["plot"] = seam_quantiles(con, n_q=n_q, **common)
    elif plot == "violin":
        out["plot"] = seam_sample(con, max_rows=sample_rows, **common)
    else:
        raise ValueError(f"unknown plot {plot!r}")
    if corr_policy and corr_reward:
        out["corr"], out["corr_n"] = variant_correlation(con, policy=corr_policy, reward=corr_reward, metric=metric,
                                                         alpha=alpha, tau=tau, _rel=rel)
        out["by_length"] = seam_by_length(con, policy=corr_policy, reward=corr_reward, metric=metric, alpha=alpha,
                                          tau=tau, variants=variants, length=length, bins=length_bins, _rel=rel)
    return out


# ---------------------------------------------------------------------------------------------------
# mismatch browser

@dataclass(frozen=True)
class BrowseFilter:
    """Filters of the mismatch browser; every field is user input and travels as a SQL parameter."""
    variants: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    rewards: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    seam_min: float | None = None
    seam_max: float | None = None
    search: str = ""
    regex: bool = False
    only_mismatch: bool = True          # RM scores at least one worse response above gold
    sample_ids: tuple[str, ...] = ()    # restrict to a selection (prompt map, saturation cell)
    alpha: float = 1.0
    tau: float = 0.0


def _browse_where(f: BrowseFilter, params: dict) -> tuple[str, str]:
    """(FROM source, WHERE clause) for the browser; sample-level filters become a semi-join."""
    src = _seam_source(f.alpha, f.tau, params, variants=f.variants, policies=f.policies, rewards=f.rewards)
    conds = [_in("m.variant", "variants", f.variants, params), _in("m.policy", "policies", f.policies, params),
             _in("m.reward", "rewards", f.rewards, params)]
    if f.seam_min is not None:
        params["seam_min"] = float(f.seam_min)
        conds.append("m.seam >= $seam_min")
    if f.seam_max is not None:
        params["seam_max"] = float(f.seam_max)
        conds.append("m.seam <= $seam_max")
    if f.only_mismatch:
        conds.append("m.hack_rate > 0")
    if f.sample_ids:
        params["sample_ids"] = list(f.sample_ids)
        conds.append("list_contains($sample_ids::VARCHAR[], m.sample_id)")
    sconds = [_in("s.dataset", "datasets", f.datasets, params), _in("s.source", "sources", f.sources, params)]
    if f.search:
        params["search"] = f.search
        if f.regex:
            sconds.append("(regexp_matches(s.prompt, $search, 'i') OR regexp_matches(s.gold, $search, 'i'))")
        else:
            sconds.append("(contains(lower(s.prompt), lower($search)) OR contains(lower(s.gold), lower($search)))")
    sconds = [c for c in sconds if c != "TRUE"]
    if sconds:
        conds.append(f"m.sample_id IN (SELECT s.sample_id FROM samples s WHERE {' AND '.join(sconds)})")
    return src, " AND ".join(conds)


def _check_regex(con: duckdb.DuckDBPyConnection, f: BrowseFilter) -> None:
    if f.search and f.regex:
        try:
            _df(con, "SELECT regexp_matches('', $p) AS ok", {"p": f.search})
        except duckdb.Error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None


def browse_count(con: duckdb.DuckDBPyConnection, f: BrowseFilter) -> int:
    """Number of (sample, variant, PM, RM) rows matching the browser filters."""
    _check_regex(con, f)
    params: dict = {}
    src, where = _browse_where(f, params)
    return int(_df(con, f"SELECT count(*) AS n FROM {src} m WHERE {where}", params)["n"][0])


def browse_page(con: duckdb.DuckDBPyConnection, f: BrowseFilter, *, sort: str = "seam", descending: bool = True,
                page: int = 1, page_size: int = 25) -> pd.DataFrame:
    """One page of matching rows (sorted and paged in SQL), with the prompt truncated for the table."""
    _check_regex(con, f)
    order = BROWSER_SORTS.get(sort)
    if order is None:
        raise ValueError(f"unknown sort {sort!r}")
    page_size = max(1, min(int(page_size), 500))
    params: dict = {"limit": page_size, "offset": max(0, int(page) - 1) * page_size}
    src, where = _browse_where(f, params)
    direction = "DESC" if descending else "ASC"
    return _df(con, f"""
        WITH page AS (
            SELECT m.sample_id, m.variant, m.policy, m.reward, m.seam, m.seam_rel, m.hack_rate, m.k,
                   m.rm_prefers_gold, m.pm_prefers_gold, m.mean_tokens
            FROM {src} m WHERE {where}
            ORDER BY {order} {direction} NULLS LAST, m.sample_id, m.variant, m.policy, m.reward
            LIMIT $limit OFFSET $offset
        )
        SELECT p.*, s.dataset, s.source, left(s.prompt, 200) AS prompt
        FROM page p JOIN samples s USING (sample_id)
        ORDER BY {order.replace('m.', 'p.')} {direction} NULLS LAST, p.sample_id, p.variant, p.policy, p.reward
    """, params)


def sample_info(con: duckdb.DuckDBPyConnection, sample_id: str) -> dict | None:
    """The sample row (prompt, gold, dataset, source, rejected, meta) or None."""
    df = _df(con, "SELECT sample_id, dataset, source, source_row, prompt, gold, rejected, CAST(meta AS VARCHAR) AS meta"
                  " FROM samples WHERE sample_id = $sid", {"sid": sample_id})
    return None if df.empty else df.iloc[0].to_dict()


def sample_responses(con: duckdb.DuckDBPyConnection, sample_id: str, *, variant: str, policy: str,
                     reward: str) -> pd.DataFrame:
    """Gold + the variant's responses of one sample with PM log-probs, token counts, reward, provenance.

    `hack` marks worse responses the RM scores above gold. Columns: response_id, variant, idx, text,
    provenance, logprob_sum, logprob_mean, n_tokens, reward_score, hack.
    """
    return _df(con, """
        WITH r AS (SELECT response_id, variant, idx, text, CAST(provenance AS VARCHAR) AS provenance
                   FROM responses WHERE sample_id = $sid AND (variant = 'gold' OR variant = $variant))
        SELECT r.*, p.logprob_sum, p.logprob_mean, p.n_tokens, s.score AS reward_score,
               s.score > max(s.score) FILTER (WHERE r.variant = 'gold') OVER () AS hack
        FROM r
        LEFT JOIN pm_scores p ON p.response_id = r.response_id AND p.policy = $policy
        LEFT JOIN rm_scores s ON s.response_id = r.response_id AND s.reward = $reward
        ORDER BY r.variant <> 'gold', r.idx
    """, {"sid": sample_id, "variant": variant, "policy": policy, "reward": reward})


def responses_by_ids(con: duckdb.DuckDBPyConnection, response_ids: Sequence[str]) -> pd.DataFrame:
    """Texts of some responses: response_id, sample_id, variant, idx, text, provenance."""
    return _df(con, """
        SELECT response_id, sample_id, variant, idx, text, CAST(provenance AS VARCHAR) AS provenance
        FROM responses WHERE list_contains($ids::VARCHAR[], response_id) ORDER BY response_id
    """, {"ids": list(response_ids)})


def response_scores(con: duckdb.DuckDBPyConnection, response_ids: Sequence[str]) -> pd.DataFrame:
    """Every score of some responses, long form: response_id, variant, role, model, value.

    value is the RM reward (role 'reward') or the PM mean token log-prob (role 'policy').
    """
    ids = list(response_ids)
    return _df(con, """
        WITH r AS (SELECT response_id, variant FROM responses WHERE response_id IN (SELECT unnest($ids::VARCHAR[])))
        SELECT r.response_id, r.variant, 'reward' AS role, s.reward AS model, s.score AS value
        FROM r JOIN rm_scores s USING (response_id)
        UNION ALL
        SELECT r.response_id, r.variant, 'policy', p.policy, p.logprob_mean
        FROM r JOIN pm_scores p USING (response_id)
        ORDER BY role, model, response_id
    """, {"ids": ids})


# ---------------------------------------------------------------------------------------------------
# spot-check

def spotcheck_pairs(con: duckdb.DuckDBPyConnection, *, kind: str = "policy", n: int = 50, seed: int = 0,
                    variant: str = "rejected", generator: str | None = None,
                    stratify: str | None = None) -> pd.DataFrame:
    """A deterministic random sample of pairs to label blind.

    kind 'policy': two PM samples (variant 'policy', same generator) of one prompt — the paper's
    PM-generated pairs. kind 'dataset': the gold response vs one worse response of `variant`.
    The same (kind, seed, variant, generator, stratify, n) always gives the same queue, which is what
    makes a labeling session resumable. Prompts are drawn first (hash order per stratum, strata
    interleaved so each gets an equal share when `stratify` is 'dataset' or 'source'), then one pair per
    prompt, so only the drawn prompts' responses are read. a_id < b_id (canonical order); `swap` says
    whether a is shown on the right.

    Columns: sample_id, dataset, source, prompt, a_id, a_text, b_id, b_text, swap, generator, kind.
    """
    if kind not in ("policy", "dataset"):
        raise ValueError("kind must be 'policy' or 'dataset'")
    strat = {"dataset": "s.dataset", "source": "coalesce(s.source, '')", None: "''"}.get(stratify)
    if strat is None:
        raise ValueError("stratify must be None, 'dataset' or 'source'")
    params: dict = {"seed": int(seed), "n": max(1, min(int(n), 5000))}
    if kind == "policy":
        gen_cond = ""
        if generator:
            params["generator"] = generator
            gen_cond = "AND json_extract_string(provenance, '$.generator') = $generator"
        cand = f"SELECT sample_id FROM responses WHERE variant = 'policy' {gen_cond}"
        pairs = f"""
            pol AS (SELECT sample_id, response_id, text, json_extract_string(provenance, '$.generator') AS generator
                    FROM responses WHERE variant = 'policy' {gen_cond}
                      AND sample_id IN (SELECT sample_id FROM chosen)),
            ranked AS (SELECT *, row_number() OVER (PARTITION BY sample_id, generator
                                                    ORDER BY hash(response_id, $seed), response_id) AS rn
                       FROM pol),
            both_ AS (SELECT x.sample_id, x.generator,
                             CASE WHEN x.response_id < y.response_id THEN x.response_id ELSE y.response_id END AS a_id,
                             CASE WHEN x.response_id < y.response_id THEN x.text ELSE y.text END AS a_text,
                             CASE WHEN x.response_id < y.response_id THEN y.response_id ELSE x.response_id END AS b_id,
                             CASE WHEN x.response_id < y.response_id THEN y.text ELSE x.text END AS b_text
                      FROM ranked x JOIN ranked y ON x.sample_id = y.sample_id
                       AND x.generator IS NOT DISTINCT FROM y.generator AND x.rn = 1 AND y.rn = 2),
            pairs AS (SELECT * FROM both_
                      QUALIFY row_number() OVER (PARTITION BY sample_id
                                                 ORDER BY hash(sample_id, generator, $seed), generator) = 1)"""
    else:
        params["variant"] = variant
        cand = "SELECT sample_id FROM responses WHERE variant = $variant"
        pairs = """
            rs AS (SELECT sample_id, response_id, variant, text FROM responses
                   WHERE (variant = $variant OR variant = 'gold') AND sample_id IN (SELECT sample_id FROM chosen)),
            w AS (SELECT * FROM rs WHERE variant = $variant
                  QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY hash(response_id, $seed), response_id) = 1),
            g AS (SELECT * FROM rs WHERE variant = 'gold'),
            pairs AS (SELECT w.sample_id, CAST(NULL AS VARCHAR) AS generator,
                             CASE WHEN w.response_id < g.response_id THEN w.response_id ELSE g.response_id END AS a_id,
                             CASE WHEN w.response_id < g.response_id THEN w.text ELSE g.text END AS a_text,
                             CASE WHEN w.response_id < g.response_id THEN g.response_id ELSE w.response_id END AS b_id,
                             CASE WHEN w.response_id < g.response_id THEN g.text ELSE w.text END AS b_text
                      FROM w JOIN g USING (sample_id))"""
    return _df(con, f"""
        WITH drawn AS (
            SELECT s.sample_id, s.dataset, s.source, s.prompt, hash(s.sample_id, $seed) AS h,
                   row_number() OVER (PARTITION BY {strat} ORDER BY hash(s.sample_id, $seed), s.sample_id) AS srn
            FROM samples s WHERE s.sample_id IN ({cand})
            QUALIFY srn <= $n),
        chosen AS (SELECT * FROM drawn ORDER BY srn, h, sample_id LIMIT $n),
        {pairs}
        SELECT c.sample_id, c.dataset, c.source, c.prompt, p.a_id, p.a_text, p.b_id, p.b_text,
               (hash(p.a_id, p.b_id, $seed + 1) % 2) = 1 AS swap, p.generator, '{kind}' AS kind
        FROM chosen c JOIN pairs p USING (sample_id)
        ORDER BY c.srn, c.h, c.sample_id
    """, params)


# ---------------------------------------------------------------------------------------------------
# saturation

def rlhf_grid(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Imported RLHF results (seam import-rlhf): policy, reward, score, source, n (runs averaged)."""
    cols = ["policy", "reward", "source", "score", "n"]
    if not relation_exists(con, "rlhf_results"):
        return pd.DataFrame(columns=cols)
    return _df(con, """
        SELECT policy, reward, coalesce(source, '') AS source, avg(score) AS score, count(*) AS n
        FROM rlhf_results GROUP BY ALL ORDER BY source, policy, reward
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
    params: dict = {"beta": max(1e-6, float(beta))}
    scored = _scored_sql(params, alpha=alpha, variants=[variant], sample_cond=_sample_cond(con, max_samples, params))
    df = _df(con, f"""
        WITH p AS (SELECT sample_id, policy, reward,
                          1.0 / (1.0 + sum(exp(least((lp + score / $beta) - (lp_gold + score_gold / $beta), 700)))) AS pg
                   FROM {scored} GROUP BY ALL)
        SELECT policy, reward, count(*) AS n, avg(pg) AS quality, stddev_samp(pg) AS sd
        FROM p GROUP BY ALL ORDER BY policy, reward
    """, params)
    return _add_t(df, mean="quality", bounds=(0.0, 1.0))


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
    params: dict = {}
    cond = _sample_cond(con, max_samples, params)
    scored = _scored_sql(params, alpha=alpha, variants=[variant], sample_cond=cond)
    # P_PM(gold) does not depend on the RM; the join with rm_scores only defines the candidate set (every
    # RM scores the same responses), so per (sample, PM) the value is the same under each RM: take one.
    pm = _df(con, f"""
        WITH p AS (SELECT sample_id, policy, reward, 1.0 / (1.0 + sum(exp(least(lp - lp_gold, 700)))) AS pg
                   FROM {scored} GROUP BY ALL),
        ps AS (SELECT sample_id, policy, any_value(pg) AS pg FROM p GROUP BY ALL)
        SELECT policy AS model, count(*) AS n, avg(pg) AS quality, stddev_samp(pg) AS sd FROM ps GROUP BY ALL
    """, params)
    pm = _add_t(pm, mean="quality", bounds=(0.0, 1.0))
    pm["role"] = "policy"
    pm["metric"] = f"PM P(gold) within gold+{variant} (alpha={alpha:g})"
    has_rej = bool(_df(con, "SELECT count(*) AS n FROM (SELECT 1 FROM responses WHERE variant = 'rejected' LIMIT 1)")["n"][0])
    params = {"ref": "rejected" if has_rej else variant}
    cond = _sample_cond(con, max_samples, params)
    rm = _df(con, f"""
        WITH r AS (SELECT response_id, sample_id, variant FROM responses
                   WHERE (variant = 'gold' OR variant = $ref) {cond}),
        sc AS (SELECT r.sample_id, r.variant, s.reward, s.score FROM r JOIN rm_scores s USING (response_id))
        SELECT w.reward AS model, count(*) AS n, count(*) FILTER (WHERE g.score > w.score) AS correct
        FROM sc w JOIN sc g ON g.sample_id = w.sample_id AND g.reward = w.reward AND g.variant = 'gold'
        WHERE w.variant = $ref GROUP BY ALL ORDER BY 1
    """, params)
    rm = _add_wilson(rm, "correct", "n", "quality").rename(columns={"quality_lo": "lo", "quality_hi": "hi"})
    rm = rm.assign(role="reward", metric=f"RM accuracy, gold vs {params['ref']}")
    return pd.concat([pm[cols], rm[cols]], ignore_index=True)


EXPERIMENT_RELATIONS = ("saturation_summary", "saturation_curve", "mismatch_rates", "model_quality",
                        "selection_results", "augmentation_results", "seam_validation", "experiment_models",
                        "experiment_runs")


def experiment_table(con: duckdb.DuckDBPyConnection, name: str, limit: int = 5000) -> pd.DataFrame:
    """One of the small result relations written by `seam experiment` (empty DataFrame when absent).

    Only names in EXPERIMENT_RELATIONS are accepted (they are formatted into the SQL text)."""
    if name not in EXPERIMENT_RELATIONS:
        raise ValueError(f"unknown experiment relation {name!r}")
    if not relation_exists(con, name):
        return pd.DataFrame()
    return _df(con, f"SELECT * FROM {name} LIMIT $limit", {"limit": int(limit)})


# ---------------------------------------------------------------------------------------------------
# filtering & export

@dataclass(frozen=True)
class FilterSpec:
    """Which samples a SEAM filter drops: the top / bottom / random `q` share by `metric` of one
    (variant, PM, RM). Ties at the threshold are broken by sample_id so the split is deterministic."""
    variant: str
    policy: str
    reward: str
    mode: str = "top"            # top | bottom | random
    q: float = 0.1               # share dropped, 0..1
    metric: str = "seam"
    seed: int = 0
    alpha: float = 1.0
    tau: float = 0.0
    sample_ids: tuple[str, ...] = field(default=())   # optional universe restriction (a selection)

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("variant", "policy", "reward", "mode", "q", "metric", "seed",
                                           "alpha", "tau")}
        d["restricted_to_selection"] = len(self.sample_ids)
        return d


def filter_cte(spec: FilterSpec, params: dict) -> str:
    """`WITH`-body defining relation `assigned(sample_id, v, hack_rate, gold_tokens, mean_tokens, dropped)`.

    Used by the filter page and by `analysis.queries.export`, so what you see is what gets exported.
    """
    if spec.mode not in ("top", "bottom", "random"):
        raise ValueError("mode must be top, bottom or random")
    if not 0.0 <= float(spec.q) <= 1.0:
        raise ValueError("q must be within [0, 1]")
    col = _metric(spec.metric)
    src = _seam_source(spec.alpha, spec.tau, params, variants=[spec.variant], policies=[spec.policy],
                       rewards=[spec.reward])
    params.update({"f_variant": spec.variant, "f_policy": spec.policy, "f_reward": spec.reward,
                   "f_q": float(spec.q), "f_seed": int(spec.seed)})
    order = {"top": "v DESC NULLS LAST, sample_id", "bottom": "v ASC NULLS LAST, sample_id",
             "random": "hash(sample_id, $f_seed), sample_id"}[spec.mode]
    restrict = ""
    if spec.sample_ids:
        params["f_ids"] = list(spec.sample_ids)
        restrict = "AND list_contains($f_ids::VARCHAR[], sample_id)"
    return f"""
        fm AS (SELECT sample_id, {col} AS v, hack_rate, gold_tokens, mean_tokens FROM {src}
               WHERE variant = $f_variant AND policy = $f_policy AND reward = $f_reward {restrict}),
        fr AS (SELECT *, row_number() OVER (ORDER BY {order}) AS rk, count(*) OVER () AS n_all FROM fm),
        assigned AS (SELECT sample_id, v, hack_rate, gold_tokens, mean_tokens,
                            rk <= floor($f_q * n_all) AS dropped FROM fr)"""


def _materialise_filter(con: duckdb.DuckDBPyConnection, spec: FilterSpec) -> str:
    """Evaluate the split once into a temp table (one row per sample: v, dropped, gold reward, lengths,
    dataset, source) that the summary / histogram / composition queries then read. Returns its name."""
    params: dict = {}
    cte = filter_cte(spec, params)
    _exec(con, f"""
        CREATE OR REPLACE TEMP TABLE _filter_rows AS
        WITH {cte},
        gold_r AS (SELECT r.sample_id, s.score AS gold_reward FROM responses r
                   JOIN rm_scores s ON s.response_id = r.response_id AND s.reward = $f_reward
                   WHERE r.variant = 'gold' AND r.sample_id IN (SELECT sample_id FROM assigned))
        SELECT a.*, g.gold_reward, sm.dataset, coalesce(sm.source, '(none)') AS source
        FROM assigned a LEFT JOIN gold_r g USING (sample_id) JOIN samples sm USING (sample_id)
    """, params)
    return "_filter_rows"


def _filter_summary_from(con, rel: str) -> pd.DataFrame:
    df = _df(con, f"""
        WITH grp AS (SELECT 'all' AS "group", * FROM {rel}
                     UNION ALL SELECT CASE WHEN dropped THEN 'dropped' ELSE 'kept' END, * FROM {rel})
        SELECT "group", count(*) AS n, avg(v) AS mean, stddev_samp(v) AS sd, min(v) AS min, max(v) AS max,
               avg(hack_rate) AS hack_rate, avg(gold_reward) AS gold_reward, avg(gold_tokens) AS gold_tokens,
               avg(mean_tokens) AS worse_tokens
        FROM grp GROUP BY "group"
        ORDER BY CASE "group" WHEN 'all' THEN 0 WHEN 'kept' THEN 1 ELSE 2 END
    """)
    return _add_t(df, bounds=(0.0, 1.0))


_FILTER_HIST_COLUMNS = {"v": "v", "gold_reward": "gold_reward", "gold_tokens": "gold_tokens",
                        "mean_tokens": "mean_tokens"}


def _filter_hist_from(con, rel: str, column: str, bins: int) -> pd.DataFrame:
    col = _FILTER_HIST_COLUMNS.get(column)
    if col is None:
        raise ValueError(f"unknown column {column!r}")
    return _df(con, f"""
        WITH j AS (SELECT dropped, CAST({col} AS DOUBLE) AS x FROM {rel} WHERE {col} IS NOT NULL),
        rng AS (SELECT min(x) AS lo, max(x) AS hi FROM j),
        grp AS (SELECT 'all' AS "group", x FROM j
                UNION ALL SELECT CASE WHEN dropped THEN 'dropped' ELSE 'kept' END, x FROM j),
        b AS (SELECT "group", lo, hi,
                     coalesce(CAST(least(greatest(floor((x - lo) / nullif((hi - lo) / $bins, 0)), 0), $bins - 1)
                                   AS INTEGER), 0) AS bin
              FROM grp, rng)
        SELECT "group", bin,
               any_value(lo) + bin * (any_value(hi) - any_value(lo)) / $bins AS bin_lo,
               any_value(lo) + (bin + 1) * (any_value(hi) - any_value(lo)) / $bins AS bin_hi,
               count(*) AS count, sum(count(*)) OVER (PARTITION BY "group") AS group_n
        FROM b GROUP BY "group", bin ORDER BY "group", bin
    """, {"bins": max(2, min(int(bins), 200))})


def _filter_comp_from(con, rel: str, by: str) -> pd.DataFrame:
    col = {"source": "source", "dataset": "dataset"}.get(by)
    if col is None:
        raise ValueError("by must be 'source' or 'dataset'")
    return _df(con, f"""
        WITH grp AS (SELECT 'all' AS "group", {col} AS category FROM {rel}
                     UNION ALL SELECT CASE WHEN dropped THEN 'dropped' ELSE 'kept' END, {col} FROM {rel})
        SELECT "group", category, count(*) AS n,
               count(*) / sum(count(*)) OVER (PARTITION BY "group") AS share
        FROM grp GROUP BY "group", category ORDER BY "group", n DESC, category
    """)


def filter_summary(con: duckdb.DuckDBPyConnection, spec: FilterSpec) -> pd.DataFrame:
    """Per group (all / kept / dropped): n, mean metric (t 95%), min / max (the thresholds), hack rate,
    gold reward, gold tokens, worse-response tokens."""
    return _filter_summary_from(con, _materialise_filter(con, spec))


def filter_histogram(con: duckdb.DuckDBPyConnection, spec: FilterSpec, column: str = "v",
                     bins: int = 30) -> pd.DataFrame:
    """Histogram of a column for the all / kept / dropped groups on shared edges.

    column: 'v' (the filter metric), 'gold_reward', 'gold_tokens', 'mean_tokens'.
    Columns: group, bin, bin_lo, bin_hi, count, group_n.
    """
    if column not in _FILTER_HIST_COLUMNS:
        raise ValueError(f"unknown column {column!r}")
    return _filter_hist_from(con, _materialise_filter(con, spec), column, bins)


def filter_composition(con: duckdb.DuckDBPyConnection, spec: FilterSpec, by: str = "source") -> pd.DataFrame:
    """Per group (all / kept / dropped) the count and share of each dataset or source."""
    if by not in ("source", "dataset"):
        raise ValueError("by must be 'source' or 'dataset'")
    return _filter_comp_from(con, _materialise_filter(con, spec), by)


def filter_report(con: duckdb.DuckDBPyConnection, spec: FilterSpec, *, bins: int = 30,
                  by: str = "source") -> dict[str, pd.DataFrame]:
    """Everything the filter page shows, from one evaluation of the split (one pass instead of five):
    {'summary', 'hist_v', 'hist_gold_reward', 'hist_gold_tokens', 'composition'}."""
    rel = _materialise_filter(con, spec)
    return {"summary": _filter_summary_from(con, rel),
            "hist_v": _filter_hist_from(con, rel, "v", bins),
            "hist_gold_reward": _filter_hist_from(con, rel, "gold_reward", bins),
            "hist_gold_tokens": _filter_hist_from(con, rel, "gold_tokens", bins),
            "composition": _filter_comp_from(con, rel, by)}


# ---------------------------------------------------------------------------------------------------
# prompt map

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
    src = _seam_source(alpha, tau, params, variants=[variant], policies=[policy], rewards=[reward])
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
PAGE_QUERIES = (
    "db_status", "table_counts", "datasets_summary", "models_summary", "variant_summary", "reject_reasons",
    "recent_runs", "filter_options", "rm_accuracy", "seam_summary", "label_mismatch", "label_disagreements",
    "seam_report", "seam_histogram", "seam_quantiles", "seam_sample", "variant_correlation", "seam_by_length",
    "browse_count", "browse_page", "sample_info", "sample_responses", "responses_by_ids", "response_scores", "spotcheck_pairs",
    "rlhf_grid", "saturation_grid", "proxy_grid", "axis_quality", "experiment_table", "filter_report", "filter_summary", "filter_histogram",
    "filter_composition", "prompt_map_points", "samples_by_ids", "relation_exists",
)
