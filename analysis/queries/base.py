"""Read interface of the results DB: what every page module of `analysis.queries` shares.

Why a package of page modules over one base: the dashboard must stay interactive at 1M samples and
must never interpolate user input into SQL. Each page's SQL lives in its own module (`overview`,
`saturation`, `distributions`, `browser`, `spotcheck`, `filtering`, `prompt_map`); this module holds
what they all use — execution, the identifier whitelists, the one histogram binning, intervals — so
both properties stay reviewable, `benchmarks/bench_queries.py` times exactly what the pages run, and
notebooks get a documented API (each function takes an open DuckDB connection and returns a small
pandas DataFrame or dict).

Conventions
- Functions take `con` first (open it with `analysis.storage.store.connect(db, read_only=True)` and close it
  promptly: a precompute needs the file lock between its short write transactions).
- User-supplied values travel as named parameters (`$name`). The only things formatted into SQL text are
  whitelisted identifiers (metric / sort columns looked up in dicts) and validated integers
  (`USING SAMPLE n ROWS`, which DuckDB does not parameterize).
- Results are aggregates (histogram bins, quantiles, grouped means) or one page of rows; never a whole
  table. Estimates come with `n` and a 95% interval (Wilson for proportions, Student t for means, both
  from `analysis.stats.metrics`).
- `alpha` / `tau` select the SEAM definition; `analysis.queries.selection.Selection` renders where
  per-sample metrics come from (the stored `seam_metrics` or the `seam_at` macro of metrics.sql).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import duckdb
import pandas as pd

from analysis.stats.metrics import t_interval, wilson
from analysis.storage import aggregates

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

# Whitelists: the only identifiers that are ever formatted into SQL text.
METRICS = {"seam": "seam", "seam_rel": "seam_rel", "hack_rate": "hack_rate"}
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


def rows_by_key(con: duckdb.DuckDBPyConnection, table: str, column: str, keys: Sequence[str],
                columns: str = "*") -> pd.DataFrame:
    """Rows of `table` whose `column` is one of `keys`, through the column's single-column index.

    DuckDB uses an index only for a plain `column = value` / `column IN (values)` filter: a join, an IN
    subquery or one more condition in the same WHERE turns the lookup into a scan of the whole table
    (measured at 100k samples: 2.5 ms vs 40-130 ms, growing with the data). So the keys go in as an
    IN list of parameters and callers filter the (few) rows further in pandas."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return _df(con, f"SELECT {columns} FROM {table} LIMIT 0")
    return _df(con, key_lookup_sql(table, column, len(keys), columns), {f"k{i}": k for i, k in enumerate(keys)})


def key_lookup_sql(table: str, column: str, n_keys: int, columns: str = "*") -> str:
    """The SQL of `rows_by_key` (parameters $k0..$k{n-1}); `table` / `column` are code constants, never input."""
    return f"SELECT {columns} FROM {table} WHERE {column} IN ({', '.join(f'$k{i}' for i in range(n_keys))})"


def metric_column(metric: str) -> str:
    """The whitelisted column of a per-sample metric name (ValueError otherwise)."""
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; one of {sorted(METRICS)}") from None


# ---------------------------------------------------------------------------------------------------
# intervals (analysis.stats.metrics), added as columns

def add_wilson(df: pd.DataFrame, k: str, n: str, prefix: str) -> pd.DataFrame:
    """Columns prefix, prefix_lo, prefix_hi: the proportion k/n with its Wilson 95% interval."""
    props = [wilson(a, b) for a, b in zip(df[k].astype(float), df[n].astype(float))]
    df[prefix] = [p.p for p in props]
    df[prefix + "_lo"] = [p.lo for p in props]
    df[prefix + "_hi"] = [p.hi for p in props]
    return df


def add_t(df: pd.DataFrame, mean: str = "mean", sd: str = "sd", n: str = "n",
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
# histograms: one binning for every page

def binned_sql(src: str, *, groups: Sequence[str], aggs: str, range_sql: str = "min(x) AS lo, max(x) AS hi",
               where: str = "TRUE", edges: tuple[str, str] = ("bin_lo", "bin_hi"),
               log: bool = False) -> tuple[str, str]:
    """(CTEs, SELECT) of equal-width bins of `x` over the relation `src` (a CTE with columns `groups`, x).

    The range (`range_sql`, defining lo and hi) is shared by all groups, so their bins line up; rows
    outside it go to the first / last bin, and a constant column puts everything in bin 0. `aggs` are the
    per-bin aggregates (e.g. `count(*) AS count`); `where` restricts the binned rows (and the range).
    `log`: bins of equal width in ln(x) (log-spaced edges, for a log axis), over the positive rows only —
    SEAM at small alpha spans 1e-7..1e-1, and equal-width bins put nearly all of it in the first bin.
    The SELECT returns groups, bin, the two `edges` columns, aggs, ordered by groups and bin; the CTEs
    (`rng`, `binned`) go after `src` in the query's WITH. Needs the parameter `$bins`.
    """
    g = "".join(f'"{c}", ' for c in groups)
    if log:
        where = f"({where}) AND x > 0"
    t, lo, hi = ("ln(x)", "ln(lo)", "ln(hi)") if log else ("x", "lo", "hi")

    def edge(e: str) -> str:
        return f"exp({e})" if log else e

    ctes = f"""rng AS (SELECT {range_sql} FROM {src} WHERE {where}),
        binned AS (SELECT {src}.*, {lo} AS t_lo, {hi} AS t_hi,
                          coalesce(CAST(least(greatest(floor(({t} - {lo}) / nullif(({hi} - {lo}) / $bins, 0)), 0),
                                                   $bins - 1) AS INTEGER), 0) AS bin
                   FROM {src}, rng WHERE {where})"""
    select = f"""SELECT {g}bin,
               {edge("any_value(t_lo) + bin * (any_value(t_hi) - any_value(t_lo)) / $bins")} AS {edges[0]},
               {edge("any_value(t_lo) + (bin + 1) * (any_value(t_hi) - any_value(t_lo)) / $bins")} AS {edges[1]},
               {aggs}
        FROM binned GROUP BY {g}bin ORDER BY {g}bin"""
    return ctes, select


# ---------------------------------------------------------------------------------------------------
# what the DB holds (every page)

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


def _counts_current(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether finalize's count `table` (analysis/storage/aggregates.py) still describes the base tables:
    not on a DB finalized by an older version, nor while a precompute is adding rows (counts stay live)."""
    if not relation_exists(con, table):
        return False
    row = _df(con, "SELECT value FROM seam_meta WHERE key = 'aggregate_counts'")
    return not row.empty and row["value"][0] == aggregates.base_counts(con)


def filter_options(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Distinct values for the filter widgets: variants (worse ones), policies, rewards, datasets, sources.
    From finalize's small tables when they are current (scanning the score tables grows with the DB)."""
    out = {}
    counted = _counts_current(con, "model_counts") and _counts_current(con, "dataset_counts")
    for key, sql in {
        "variants": "SELECT DISTINCT variant AS v FROM "
                    + ("seam_group_stats" if relation_exists(con, "seam_group_stats") else "seam_metrics") + " ORDER BY 1",
        "policies": ("SELECT model AS v FROM model_counts WHERE role = 'policy' ORDER BY 1" if counted else
                     "SELECT DISTINCT policy AS v FROM pm_scores ORDER BY 1"),
        "rewards": ("SELECT model AS v FROM model_counts WHERE role = 'reward' ORDER BY 1" if counted else
                    "SELECT DISTINCT reward AS v FROM rm_scores ORDER BY 1"),
        "datasets": ("SELECT dataset AS v FROM dataset_counts ORDER BY 1" if counted else
                     "SELECT DISTINCT dataset AS v FROM samples ORDER BY 1"),
        "sources": "SELECT DISTINCT source AS v FROM samples WHERE source IS NOT NULL ORDER BY 1 LIMIT 500",
    }.items():
        out[key] = [str(v) for v in _df(con, sql)["v"]]
    # models in the order they were registered (the CLI order, weakest to strongest by convention)
    for key, role in (("policies", "policy"), ("rewards", "reward")):
        reg = list(_df(con, "SELECT model FROM models WHERE role = $r ORDER BY rowid", {"r": role})["model"])
        out[key] = [m for m in reg if m in out[key]] + [m for m in out[key] if m not in reg]
    return out


def column_exists(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether `table` has `column`: a DB last written by an older version may lack newer columns, and the
    app opens DBs read-only (it never migrates), so it asks before relying on one."""
    return bool(_df(con, "SELECT count(*) AS n FROM duckdb_columns() WHERE table_name = $t AND column_name = $c",
                    {"t": table, "c": column})["n"].iloc[0])


def model_aliases(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """{model reference: display name} set with `seam alias` (empty on a DB written before aliases existed)."""
    if not column_exists(con, "models", "alias"):
        return {}
    df = _df(con, "SELECT model, alias FROM models WHERE alias IS NOT NULL ORDER BY role, model")
    return dict(zip(df["model"].astype(str), df["alias"].astype(str)))


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
