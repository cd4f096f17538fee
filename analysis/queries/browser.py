"""Queries of the mismatch browser: the frozen `BrowseFilter` (rendered over a `Selection`), paged rows,
and one sample's responses and scores.

The browser's search box is user input: it travels as a parameter (substring or regex match in DuckDB),
never as SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import duckdb
import pandas as pd

from analysis.queries.base import _df, _in, rows_by_key
from analysis.queries.selection import Selection

BROWSER_SORTS = {"seam": "m.seam", "seam_rel": "m.seam_rel", "hack_rate": "m.hack_rate",
                 "mean_tokens": "m.mean_tokens", "sample_id": "m.sample_id"}


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

    @property
    def selection(self) -> Selection:
        """The SEAM rows this filter reads (definition, variants, models, datasets)."""
        return Selection(alpha=self.alpha, tau=self.tau, variants=self.variants, policies=self.policies,
                         rewards=self.rewards, datasets=self.datasets)


def _browse_where(f: BrowseFilter, params: dict) -> tuple[str, str]:
    """(FROM source, WHERE clause) for the browser; sample-level filters become a semi-join."""
    sel = f.selection
    src = sel.source(params)
    conds = [sel.where(params, "m")]
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
    sconds = [_in("s.source", "sources", f.sources, params)]
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
    provenance, logprob_sum, logprob_mean, n_tokens, reward_score, hack. Index lookups only (`rows_by_key`),
    so the cost does not grow with the DB.
    """
    r = rows_by_key(con, "responses", "sample_id", [sample_id],
                    "response_id, variant, idx, text, CAST(provenance AS VARCHAR) AS provenance")
    r = r[(r["variant"] == "gold") | (r["variant"] == variant)]
    ids = list(r["response_id"])
    p = rows_by_key(con, "pm_scores", "response_id", ids, "response_id, policy, logprob_sum, logprob_mean, n_tokens")
    s = rows_by_key(con, "rm_scores", "response_id", ids, "response_id, reward, score AS reward_score")
    out = (r.merge(p[p["policy"] == policy].drop(columns="policy"), on="response_id", how="left")
            .merge(s[s["reward"] == reward].drop(columns="reward"), on="response_id", how="left"))
    gold = out.loc[out["variant"] == "gold", "reward_score"].max()
    out["hack"] = out["reward_score"] > gold
    out = out.assign(_worse=out["variant"] != "gold").sort_values(["_worse", "idx"], kind="stable")
    return out.drop(columns="_worse").reset_index(drop=True)


def responses_by_ids(con: duckdb.DuckDBPyConnection, response_ids: Sequence[str]) -> pd.DataFrame:
    """Texts of some responses: response_id, sample_id, variant, idx, text, provenance."""
    return _df(con, """
        SELECT response_id, sample_id, variant, idx, text, CAST(provenance AS VARCHAR) AS provenance
        FROM responses WHERE list_contains($ids::VARCHAR[], response_id) ORDER BY response_id
    """, {"ids": list(response_ids)})


def response_scores(con: duckdb.DuckDBPyConnection, response_ids: Sequence[str]) -> pd.DataFrame:
    """Every score of some responses, long form: response_id, variant, role, model, value.

    value is the RM reward (role 'reward') or the PM mean token log-prob (role 'policy'). Index lookups only.
    """
    r = rows_by_key(con, "responses", "response_id", response_ids, "response_id, variant")
    ids = list(r["response_id"])
    rm = rows_by_key(con, "rm_scores", "response_id", ids, "response_id, 'reward' AS role, reward AS model, score AS value")
    pm = rows_by_key(con, "pm_scores", "response_id", ids,
                     "response_id, 'policy' AS role, policy AS model, logprob_mean AS value")
    out = r.merge(pd.concat([rm, pm], ignore_index=True), on="response_id")
    return out[["response_id", "variant", "role", "model", "value"]].sort_values(
        ["role", "model", "response_id"], kind="stable").reset_index(drop=True)
