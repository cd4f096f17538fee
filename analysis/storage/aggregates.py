"""What the dashboard pages show, materialised at finalize so a page query's cost does not grow with the data.

Why: at millions of samples every page that scanned `seam_metrics` (tens of millions of rows) or
recomputed `seam_at` from the per-response scores took seconds. `store.finalize` calls `build(con)`
after `seam_metrics` is written; the page modules of `analysis.queries` read these small tables and fall
back to exact SQL only for a custom slice (a SEAM definition off the grid, a dataset filter, other
widget values). Every number here comes from the metrics.sql macros (`seam_at` through `seam_metrics`,
`pm_gold_prob_at`): no second formula.

Tables (all replaced on every finalize):
- `seam_group_stats`: per metric x variant x PM x RM at the default definition, over ALL samples:
  n, mean, sd, median, hack / preference rates (the overview's headline table and the distributions
  page's summary).
- `seam_sample_rows`: the per-sample rows of `seam_at(alpha, tau)` for every (alpha, tau) of
  ALPHA_GRID x TAU_GRID on the deterministic hash sample of <= SAMPLE_ROWS_MAX samples that the
  distributions page uses (the whole DB when smaller): its charts read one grid point of it, a fixed
  number of rows whatever the DB size.
- `axis_pm_quality`: per worse variant x PM at alpha = 1, the PM's own P(gold) within gold + variant on
  the hash sample of <= AXIS_MAX_SAMPLES samples (the saturation page's PM axis).
- `proxy_quality`: per worse variant x beta of BETA_GRID x PM x RM at alpha = 1, the built-in saturation
  proxy on the same hash sample.
- `variant_counts`, `model_counts`, `dataset_counts`: the overview's row counts (used while the base
  tables still hold the row counts recorded in seam_meta 'aggregate_counts', i.e. not during a precompute).
"""

from __future__ import annotations

import json

import duckdb

#: The SEAM definitions precomputed for the distributions page (alpha slider stops x hard / default soft).
ALPHA_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
TAU_GRID = (0.0, 1.0)
#: Modulus of the deterministic hash sample of samples (a prime, so `hash % mod` is near uniform).
SAMPLE_MOD = 1_000_003
#: Samples behind the distributions page's charts (and non-default definitions) on big DBs.
SAMPLE_ROWS_MAX = 100_000
#: Samples behind the saturation page's built-in PM axis and proxy on big DBs.
AXIS_MAX_SAMPLES = 50_000
#: The saturation page's proxy KL coefficients (its beta slider's stops).
BETA_GRID = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
#: Row order of seam_sample_rows within a grid point: a page reads one (alpha, tau, PM, RM) slice, and with the
#: slice's rows contiguous DuckDB's min/max zone maps skip the rest of the table (measured: the distributions
#: page's report 0.37 -> 0.20 s at 100k samples).
ROW_ORDER = "policy, reward, variant, sample_id"
TABLES = ("seam_group_stats", "seam_sample_rows", "axis_pm_quality", "proxy_quality", "variant_counts", "model_counts",
          "dataset_counts")


def hash_keep(n_total: int, max_samples: int | None) -> int | None:
    """`sample_keep` such that `hash(sample_id) % SAMPLE_MOD < keep` keeps ~max_samples of n_total samples;
    None when no sampling is needed (no limit, or the DB is small enough)."""
    if not max_samples or n_total <= max_samples:
        return None
    return max(1, int(SAMPLE_MOD * max_samples / n_total))


def on_grid(alpha: float, tau: float) -> tuple[float, float] | None:
    """The grid point (alpha, tau) equals, or None."""
    a = next((g for g in ALPHA_GRID if abs(g - alpha) < 1e-9), None)
    t = next((g for g in TAU_GRID if abs(g - tau) < 1e-9), None)
    return None if a is None or t is None else (a, t)


COUNTED = ("samples", "responses", "pm_scores", "rm_scores")


def base_counts(con: duckdb.DuckDBPyConnection) -> str:
    """Row counts of the base tables the count tables summarise, as JSON: recorded at finalize, compared by
    readers (a plain count(*) is metadata-cheap), so counts taken while a precompute adds rows stay live."""
    sql = " UNION ALL ".join(f"SELECT '{t}' AS t, count(*) AS n FROM {t}" for t in COUNTED)
    return json.dumps(dict(sorted(con.execute(sql).fetchall())))


def build(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)write every aggregate table from `seam_metrics` and the metrics.sql macros."""
    n_total = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    # One (PM, RM) slice at a time: the exact median holds every value of its group in memory, which over all
    # of seam_metrics outgrows finalize's memory cap at a few million samples; a slice is a fraction of it
    # (and, with seam_metrics sorted by model, read through its zone maps).
    group_stats = """
        WITH m AS (SELECT variant, policy, reward, hack_rate, rm_prefers_gold, pm_prefers_gold,
                          unnest(['seam', 'seam_rel', 'hack_rate']) AS metric,
                          unnest([seam, seam_rel, hack_rate]) AS x
                   FROM seam_metrics WHERE policy = $p AND reward = $r)
        SELECT metric, policy, reward, variant, count(x) AS n, avg(x) AS mean, stddev_samp(x) AS sd,
               median(x) AS median, avg(hack_rate) AS hack_rate,
               avg(CAST(rm_prefers_gold AS DOUBLE)) AS rm_prefers_gold,
               avg(CAST(pm_prefers_gold AS DOUBLE)) AS pm_prefers_gold
        FROM m GROUP BY ALL ORDER BY metric, policy, reward, variant"""
    con.execute(f"CREATE OR REPLACE TABLE seam_group_stats AS {group_stats} LIMIT 0", {"p": None, "r": None})
    for p, r in con.execute("SELECT DISTINCT policy, reward FROM seam_metrics ORDER BY ALL").fetchall():
        con.execute(f"INSERT INTO seam_group_stats {group_stats}", {"p": p, "r": r})
    keep = hash_keep(n_total, SAMPLE_ROWS_MAX)
    cond = "TRUE" if keep is None else f"hash(sample_id) % {SAMPLE_MOD} < {int(keep)}"
    cols = ("sample_id, variant, policy, reward, seam, seam_rel, hack_rate, k, pm_prefers_gold, rm_prefers_gold,"
            " mean_tokens, gold_tokens, gold_score, dataset, source")
    # dataset / source ride along (per-sample attributes) so the filter page's preview needs no join
    ds = "JOIN (SELECT sample_id, dataset, coalesce(source, '(none)') AS source FROM samples) USING (sample_id)"
    con.execute(f"CREATE OR REPLACE TABLE seam_sample_rows AS SELECT 1.0::DOUBLE AS alpha, 0.0::DOUBLE AS tau, {cols}"
                f" FROM seam_metrics {ds} WHERE {cond} ORDER BY {ROW_ORDER}")
    sampled = "" if keep is None else f", sample_mod := {SAMPLE_MOD}, sample_keep := {int(keep)}"
    for alpha in ALPHA_GRID:   # one pass over the scores per alpha serves every tau
        taus = [float(t) for t in TAU_GRID if (alpha, t) != (1.0, 0.0)]   # (1, 0): seam_metrics' rows, above
        con.execute(f"INSERT INTO seam_sample_rows SELECT {float(alpha)!r}, tau, {cols}"
                    f" FROM seam_at_taus({float(alpha)!r}, {taus!r}{sampled}) {ds} ORDER BY tau, {ROW_ORDER}")
    keep = hash_keep(n_total, AXIS_MAX_SAMPLES)
    sampled = "" if keep is None else f", sample_mod := {SAMPLE_MOD}, sample_keep := {int(keep)}"
    con.execute("CREATE OR REPLACE TABLE axis_pm_quality (variant VARCHAR, policy VARCHAR, n BIGINT,"
                " quality DOUBLE, sd DOUBLE)")
    variants = [r[0] for r in con.execute("SELECT DISTINCT variant FROM seam_metrics ORDER BY 1").fetchall()]
    for v in variants:
        con.execute(f"INSERT INTO axis_pm_quality SELECT ?, policy, count(*), avg(pg), stddev_samp(pg)"
                    f" FROM pm_gold_prob_at(1.0, ?{sampled}) GROUP BY ALL", [v, v])
    con.execute("CREATE OR REPLACE TABLE proxy_quality (variant VARCHAR, beta DOUBLE, policy VARCHAR, reward VARCHAR,"
                " n BIGINT, quality DOUBLE, sd DOUBLE)")
    for v in variants:
        con.execute(f"INSERT INTO proxy_quality SELECT ?, beta, policy, reward, count(*), avg(pg), stddev_samp(pg)"
                    f" FROM proxy_gold_prob_at(1.0, {list(BETA_GRID)!r}, ?{sampled}) GROUP BY ALL", [v, v])
    con.execute("""
        CREATE OR REPLACE TABLE variant_counts AS
        SELECT variant, count(*) AS responses, count(DISTINCT sample_id) AS samples FROM responses GROUP BY variant
    """)
    con.execute("""
        CREATE OR REPLACE TABLE model_counts AS
        SELECT policy AS model, 'policy' AS role, count(*) AS scored FROM pm_scores GROUP BY 1
        UNION ALL
        SELECT reward, 'reward', count(*) FROM rm_scores GROUP BY 1
    """)
    con.execute("""
        CREATE OR REPLACE TABLE dataset_counts AS
        SELECT dataset, count(*) AS samples, count(DISTINCT source) AS sources FROM samples GROUP BY dataset
    """)
    con.execute("INSERT OR REPLACE INTO seam_meta VALUES ('aggregate_counts', ?)", [base_counts(con)])
