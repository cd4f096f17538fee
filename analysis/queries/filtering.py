"""Queries of the filter & export page: which samples a SEAM filter drops, and what that does to the data.

`FilterSpec` is frozen and renders its own SQL (`filter_cte`); `analysis.queries.export` reuses that SQL,
so what the page shows is what gets exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb
import pandas as pd

from analysis.queries.base import _df, _exec, add_t, binned_sql, column_exists
from analysis.queries.selection import Selection

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

    @property
    def selection(self) -> Selection:
        """The SEAM rows the filter ranks: one (variant, PM, RM) at the spec's definition."""
        return Selection(alpha=self.alpha, tau=self.tau, metric=self.metric, variants=(self.variant,),
                         policies=(self.policy,), rewards=(self.reward,))

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("variant", "policy", "reward", "mode", "q", "metric", "seed",
                                           "alpha", "tau")}
        d["restricted_to_selection"] = len(self.sample_ids)
        return d


def filter_cte(spec: FilterSpec, params: dict, src: str | None = None) -> str:
    """`WITH`-body defining relation `assigned(sample_id, v, hack_rate, gold_tokens, mean_tokens, dropped)`.

    Used by the filter page and by `analysis.queries.export`, so what you see is what gets exported.
    `src` (default: the spec's exact per-sample metrics) lets the page's preview rank a stored hash sample
    with the same rule.
    """
    if spec.mode not in ("top", "bottom", "random"):
        raise ValueError("mode must be top, bottom or random")
    if not 0.0 <= float(spec.q) <= 1.0:
        raise ValueError("q must be within [0, 1]")
    sel = spec.selection
    col = sel.column
    src = src or sel.source(params)
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


def _materialise_filter(con: duckdb.DuckDBPyConnection, spec: FilterSpec, stored: str | None = None) -> str:
    """Evaluate the split once into a temp table (one row per sample: v, dropped, gold reward, lengths,
    dataset, source) that the summary / histogram / composition queries then read. Returns its name.
    `stored`: finalize's per-sample rows (`Selection.stored_rows`), which carry gold reward, dataset and
    source, so the split needs no join with the score and sample tables."""
    params: dict = {}
    cte = filter_cte(spec, params, stored)
    if stored:
        _exec(con, f"""
            CREATE OR REPLACE TEMP TABLE _filter_rows AS
            WITH {cte}
            SELECT a.*, st.gold_score AS gold_reward, st.dataset, st.source
            FROM assigned a JOIN {stored} st USING (sample_id)
            WHERE st.variant = $f_variant AND st.policy = $f_policy AND st.reward = $f_reward
        """, params)
        return "_filter_rows"
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
    return add_t(df, bounds=(0.0, 1.0))


_FILTER_HIST_COLUMNS = {"v": "v", "gold_reward": "gold_reward", "gold_tokens": "gold_tokens",
                        "mean_tokens": "mean_tokens"}


def _filter_hist_from(con, rel: str, column: str, bins: int) -> pd.DataFrame:
    col = _FILTER_HIST_COLUMNS.get(column)
    if col is None:
        raise ValueError(f"unknown column {column!r}")
    ctes, hist = binned_sql("grp", groups=("group",),
                            aggs='count(*) AS count, sum(count(*)) OVER (PARTITION BY "group") AS group_n')
    return _df(con, f"""
        WITH j AS (SELECT dropped, CAST({col} AS DOUBLE) AS x FROM {rel} WHERE {col} IS NOT NULL),
        grp AS (SELECT 'all' AS "group", x FROM j
                UNION ALL SELECT CASE WHEN dropped THEN 'dropped' ELSE 'kept' END, x FROM j),
        {ctes}
        {hist}
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


def filter_report(con: duckdb.DuckDBPyConnection, spec: FilterSpec, *, bins: int = 30, by: str = "source",
                  max_samples: int | None = None) -> dict:
    """Everything the filter page shows, from one evaluation of the split (one pass instead of five):
    {'summary', 'hist_v', 'hist_gold_reward', 'hist_gold_tokens', 'composition', 'scope'}.

    With `max_samples` = the stored hash sample's size (aggregates.SAMPLE_ROWS_MAX) and a spec on the grid of
    precomputed definitions without a selection, the split is previewed on finalize's uniform hash sample of
    <= max_samples samples (all of them on a smaller DB), so the page's cost does not grow with the data;
    the export applies the same rule to every sample. `scope` (one row): n_used, n_all, sampled."""
    stored = None if spec.sample_ids or max_samples is None else spec.selection.stored_rows(con, max_samples)
    if stored and not column_exists(con, "seam_sample_rows", "gold_score"):   # finalized by an older version
        stored = None
    rel = _materialise_filter(con, spec, stored)
    n_used = int(_df(con, f"SELECT count(*) AS n FROM {rel}")["n"][0])
    n_all = n_used
    if stored:
        params: dict = {"v": spec.variant, "p": spec.policy, "r": spec.reward}
        n_all = int(_df(con, "SELECT count(*) AS n FROM seam_metrics WHERE variant = $v AND policy = $p AND reward = $r",
                        params)["n"][0])
    return {"summary": _filter_summary_from(con, rel),
            "hist_v": _filter_hist_from(con, rel, "v", bins),
            "hist_gold_reward": _filter_hist_from(con, rel, "gold_reward", bins),
            "hist_gold_tokens": _filter_hist_from(con, rel, "gold_tokens", bins),
            "composition": _filter_comp_from(con, rel, by),
            "scope": pd.DataFrame([{"n_used": n_used, "n_all": n_all, "sampled": n_used < n_all}])}
