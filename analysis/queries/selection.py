"""Which per-sample SEAM rows a chart reads: the one selection object every page shares.

SEAM is defined once, in SQL (analysis/storage/sql/metrics.sql). A `Selection` (SEAM definition alpha /
tau, metric, variants, PMs, RMs, datasets) renders where its rows come from and which of them it keeps:
at the default definition (alpha = 1, tau = 0) the materialised `seam_metrics` (written by
`store.finalize` from the same `seam_at` macro), at any other the `seam_at(alpha, tau, ...)` macro itself,
with the variant / model filters passed in as macro arguments so they reach the base-table scans, and,
on big DBs, a deterministic hash sample of samples. User values travel only as parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import duckdb

from analysis.queries.base import _df, _in, metric_column, relation_exists
from analysis.storage import aggregates

SAMPLE_MOD = aggregates.SAMPLE_MOD
# Non-default SEAM definitions are recomputed from the per-response scores (tens of millions of rows at
# 1M samples); above this many samples the distribution page evaluates them on a deterministic hash
# sample of samples (the same one for every chart, n shown), which keeps it interactive. For the
# definitions of aggregates.ALPHA_GRID x TAU_GRID finalize stored those rows (`seam_sample_rows`).
NONDEFAULT_MAX_SAMPLES = aggregates.SAMPLE_ROWS_MAX


def sample_keep(con: duckdb.DuckDBPyConnection | None, max_samples: int | None, params: dict) -> bool:
    """Set `$s_mod` / `$s_keep` so that `hash(sample_id) % s_mod < s_keep` keeps ~max_samples samples.

    Returns False (nothing set) when not needed: no connection or limit given, or the DB is small enough."""
    if con is None or not max_samples:
        return False
    n_total = int(_df(con, "SELECT count(*) AS n FROM samples")["n"][0])
    keep = aggregates.hash_keep(n_total, max_samples)
    if keep is None:
        return False
    params["s_mod"] = SAMPLE_MOD
    params["s_keep"] = keep
    return True


def _macro_filters(params: dict, variants: Sequence[str], policies: Sequence[str], rewards: Sequence[str],
                   sampled: bool) -> str:
    """Named arguments of the metrics.sql macros for the filters that are set (unset = macro default NULL)."""
    args = []
    for arg, name, values in (("only_variants", "sv_variants", variants), ("only_policies", "sv_policies", policies),
                              ("only_rewards", "sv_rewards", rewards)):
        if values:
            params[name] = list(values)
            args.append(f", {arg} := ${name}::VARCHAR[]")
    if sampled:
        args.append(", sample_mod := $s_mod, sample_keep := $s_keep")
    return "".join(args)


def scored_source(params: dict, *, alpha: float, variants: Sequence[str] = (), policies: Sequence[str] = (),
                  rewards: Sequence[str] = (), con: duckdb.DuckDBPyConnection | None = None,
                  max_samples: int | None = None) -> str:
    """FROM-clause: worse responses joined with their gold under the same PM and RM (`scored_vs_gold`)."""
    params["alpha"] = float(alpha)
    sampled = sample_keep(con, max_samples, params)
    return f"scored_vs_gold($alpha{_macro_filters(params, variants, policies, rewards, sampled)})"


def _tuple(values: Sequence[str] | str | None) -> tuple[str, ...]:
    if not values:
        return ()
    return (values,) if isinstance(values, str) else tuple(values)


@dataclass(frozen=True)
class Selection:
    """The per-sample SEAM rows a chart shows. Empty tuples mean "all"; every value is user input and
    travels as a SQL parameter (the metric is whitelisted)."""
    alpha: float = 1.0
    tau: float = 0.0
    metric: str = "seam"
    variants: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    rewards: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("variants", "policies", "rewards", "datasets"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "tau", float(self.tau))
        metric_column(self.metric)

    @property
    def column(self) -> str:
        """The whitelisted metric column."""
        return metric_column(self.metric)

    @property
    def is_default(self) -> bool:
        """The materialised definition (alpha = 1, hard hacking)."""
        return abs(self.alpha - 1.0) < 1e-12 and self.tau == 0.0

    @property
    def on_grid(self) -> bool:
        """A definition finalize precomputed (aggregates.ALPHA_GRID x TAU_GRID); others are custom slices."""
        return aggregates.on_grid(self.alpha, max(0.0, self.tau)) is not None

    def but(self, **changes) -> "Selection":
        """A copy with some fields changed (dataclasses.replace)."""
        return replace(self, **changes)

    def source(self, params: dict, *, con: duckdb.DuckDBPyConnection | None = None,
               max_samples: int | None = None) -> str:
        """FROM-clause of the per-sample metrics; adds the parameters it needs to `params`.

        The default definition reads `seam_metrics` (exact, fast). Any other evaluates the `seam_at`
        macro with this selection's variant / model filters pushed into the scans and, when `con` and
        `max_samples` are given and the DB is larger, on a deterministic hash sample of ~max_samples samples.
        """
        if self.is_default:
            return "seam_metrics"
        params["alpha"] = self.alpha
        params["tau"] = max(0.0, self.tau)
        sampled = sample_keep(con, max_samples, params)
        filters = _macro_filters(params, self.variants, self.policies, self.rewards, sampled)
        return f"seam_at($alpha, $tau{filters})"

    def stored_rows(self, con: duckdb.DuckDBPyConnection, max_samples: int | None) -> str | None:
        """A TEMP VIEW over finalize's `seam_sample_rows` at this definition, when it is on the grid and the
        caller asks for the page's sample size (the rows `source(con=, max_samples=)` would compute); else
        None (a custom slice: compute exactly). Only grid constants are formatted into the view's SQL."""
        point = aggregates.on_grid(self.alpha, max(0.0, self.tau))
        if point is None or max_samples != aggregates.SAMPLE_ROWS_MAX or not relation_exists(con, "seam_sample_rows"):
            return None
        a, t = point
        con.execute(f"CREATE OR REPLACE TEMP VIEW _seam_grid AS SELECT * FROM seam_sample_rows"
                    f" WHERE alpha = {a!r} AND tau = {t!r}")
        return "_seam_grid"

    def where(self, params: dict, alias: str = "") -> str:
        """WHERE-condition keeping this selection's variants, models and datasets (TRUE when unfiltered)."""
        a = f"{alias}." if alias else ""
        conds = [_in(f"{a}variant", "variants", self.variants, params),
                 _in(f"{a}policy", "policies", self.policies, params),
                 _in(f"{a}reward", "rewards", self.rewards, params)]
        if self.datasets:
            ds = _in("dataset", "datasets", self.datasets, params)
            conds.append(f"{a}sample_id IN (SELECT sample_id FROM samples WHERE {ds})")
        return " AND ".join(conds)


ALL = Selection()  # every variant and model at the default definition (frozen, so a safe default argument)
