"""Queries of the spot-check page: blind pair queues, and the RM's mismatch against hand labels
(also shown on the Overview and, as single pairs, in the mismatch browser).
"""

from __future__ import annotations

import duckdb
import pandas as pd

from analysis.queries.base import _df, add_wilson, rows_by_key
from analysis.queries.selection import NONDEFAULT_MAX_SAMPLES as POOL_MAX, sample_keep

def spotcheck_pairs(con: duckdb.DuckDBPyConnection, *, kind: str = "policy", n: int = 50, seed: int = 0,
                    variant: str = "rejected", generator: str | None = None,
                    stratify: str | None = None, exclude_truncated: bool = True,
                    cell: str | None = None) -> pd.DataFrame:
    """A deterministic random sample of pairs to label blind.

    kind 'policy': two PM samples (variant 'policy', same generator) of one prompt — the paper's
    PM-generated pairs. kind 'dataset': the gold response vs one worse response of `variant`.
    The same (kind, seed, variant, generator, stratify, n) always gives the same queue, which is what
    makes a labeling session resumable. Prompts are drawn first (hash order per stratum, strata
    interleaved so each gets an equal share when `stratify` is 'dataset' or 'source'), then one pair per
    prompt, so only the drawn prompts' responses are read. a_id < b_id (canonical order); `swap` says
    whether a is shown on the right. `exclude_truncated` leaves out responses whose provenance says the
    generation hit its token cap (`"truncated": true`): people should judge answers, not fragments.

    Columns: sample_id, dataset, source, prompt, a_id, a_text, a_prov, b_id, b_text, b_prov, swap,
    generator, kind (a_prov / b_prov: provenance JSON text, for the "cut at N tokens" marker).

    kind 'rlhf': the held-out pairs of `seam rlhf-grid` (starting PM vs trained policy on one prompt), of
    one cell (`cell` = its cell_id) or of all cells; see `rlhf_eval_pairs`.

    On a DB of more than POOL_MAX samples the prompts are drawn from a uniform hash subset of ~POOL_MAX of
    them (the distributions page's sample): a queue of at most 5,000 drawn from 100k random prompts is as
    random as one drawn from all, and the cost no longer grows with the DB.
    """
    if kind == "rlhf":
        return rlhf_eval_queue(con, n=n, seed=seed, cell=cell)
    if kind not in ("policy", "dataset"):
        raise ValueError("kind must be 'policy', 'dataset' or 'rlhf'")
    strat = {"dataset": "s.dataset", "source": "coalesce(s.source, '')", None: "''"}.get(stratify)
    if strat is None:
        raise ValueError("stratify must be None, 'dataset' or 'source'")
    params: dict = {"seed": int(seed)}
    # a substring test first: parsing every response's provenance JSON was most of the queue's cost at 1M samples
    whole = ("AND NOT (contains(CAST(provenance AS VARCHAR), 'truncated')"
             " AND coalesce(json_extract_string(provenance, '$.truncated'), 'false') = 'true')"
             if exclude_truncated else "")
    if kind == "policy":
        gen_cond = ""
        if generator:
            params["generator"] = generator
            gen_cond = "AND json_extract_string(provenance, '$.generator') = $generator"
        cand = f"SELECT sample_id FROM responses WHERE variant = 'policy' {gen_cond} {whole}"
        pairs = f"""
            pol AS (SELECT sample_id, response_id, text, provenance AS prov,
                           json_extract_string(provenance, '$.generator') AS generator
                    FROM _spot_rs WHERE variant = 'policy' {gen_cond} {whole}),
            ranked AS (SELECT *, row_number() OVER (PARTITION BY sample_id, generator
                                                    ORDER BY hash(response_id, $seed), response_id) AS rn
                       FROM pol),
            both_ AS (SELECT x.sample_id, x.generator,
                             CASE WHEN x.response_id < y.response_id THEN x.response_id ELSE y.response_id END AS a_id,
                             CASE WHEN x.response_id < y.response_id THEN x.text ELSE y.text END AS a_text,
                             CASE WHEN x.response_id < y.response_id THEN x.prov ELSE y.prov END AS a_prov,
                             CASE WHEN x.response_id < y.response_id THEN y.response_id ELSE x.response_id END AS b_id,
                             CASE WHEN x.response_id < y.response_id THEN y.text ELSE x.text END AS b_text,
                             CASE WHEN x.response_id < y.response_id THEN y.prov ELSE x.prov END AS b_prov
                      FROM ranked x JOIN ranked y ON x.sample_id = y.sample_id
                       AND x.generator IS NOT DISTINCT FROM y.generator AND x.rn = 1 AND y.rn = 2),
            pairs AS (SELECT * FROM both_
                      QUALIFY row_number() OVER (PARTITION BY sample_id
                                                 ORDER BY hash(sample_id, generator, $seed), generator) = 1)"""
    else:
        params["variant"] = variant
        cand = f"SELECT sample_id FROM responses WHERE variant = $variant {whole}"
        pairs = f"""
            rs AS (SELECT sample_id, response_id, variant, text, provenance AS prov FROM _spot_rs
                   WHERE (variant = $variant OR variant = 'gold') {whole}),
            w AS (SELECT * FROM rs WHERE variant = $variant
                  QUALIFY row_number() OVER (PARTITION BY sample_id ORDER BY hash(response_id, $seed), response_id) = 1),
            g AS (SELECT * FROM rs WHERE variant = 'gold'),
            pairs AS (SELECT w.sample_id, CAST(NULL AS VARCHAR) AS generator,
                             CASE WHEN w.response_id < g.response_id THEN w.response_id ELSE g.response_id END AS a_id,
                             CASE WHEN w.response_id < g.response_id THEN w.text ELSE g.text END AS a_text,
                             CASE WHEN w.response_id < g.response_id THEN w.prov ELSE g.prov END AS a_prov,
                             CASE WHEN w.response_id < g.response_id THEN g.response_id ELSE w.response_id END AS b_id,
                             CASE WHEN w.response_id < g.response_id THEN g.text ELSE w.text END AS b_text,
                             CASE WHEN w.response_id < g.response_id THEN g.prov ELSE w.prov END AS b_prov
                      FROM w JOIN g USING (sample_id))"""
    # 1. the prompts (hash order per stratum); 2. their responses by index; 3. the pairs, over those few rows
    draw = dict(params, n=max(1, min(int(n), 5000)))
    pool = ""
    if sample_keep(con, POOL_MAX, draw):   # big DB: draw from a uniform hash subset of the prompts
        cand += " AND hash(sample_id) % $s_mod < $s_keep"
        pool = "AND hash(s.sample_id) % $s_mod < $s_keep"
    chosen = _df(con, f"""
        WITH drawn AS (
            SELECT s.sample_id, s.dataset, s.source, s.prompt, hash(s.sample_id, $seed) AS h,
                   row_number() OVER (PARTITION BY {strat} ORDER BY hash(s.sample_id, $seed), s.sample_id) AS srn
            FROM samples s WHERE s.sample_id IN ({cand}) {pool}
            QUALIFY srn <= $n)
        SELECT * FROM drawn ORDER BY srn, h, sample_id LIMIT $n
    """, draw)
    con.register("_spot_chosen", chosen)
    con.register("_spot_rs", rows_by_key(con, "responses", "sample_id", list(chosen["sample_id"]),
                                         "sample_id, response_id, variant, text, CAST(provenance AS VARCHAR) AS provenance"))
    try:
        return _df(con, f"""
            WITH {pairs}
            SELECT c.sample_id, c.dataset, c.source, c.prompt, p.a_id, p.a_text, p.a_prov, p.b_id, p.b_text, p.b_prov,
                   (hash(p.a_id, p.b_id, $seed + 1) % 2) = 1 AS swap, p.generator, '{kind}' AS kind
            FROM _spot_chosen c JOIN pairs p USING (sample_id)
            ORDER BY c.srn, c.h, c.sample_id
        """, params)
    finally:
        con.unregister("_spot_chosen")
        con.unregister("_spot_rs")


QUEUE_COLUMNS = ["sample_id", "dataset", "source", "prompt", "a_id", "a_text", "a_prov", "b_id", "b_text", "b_prov",
                 "swap", "generator", "kind"]


def rlhf_eval_queue(con: duckdb.DuckDBPyConnection, *, n: int = 50, seed: int = 0,
                    cell: str | None = None) -> pd.DataFrame:
    """Blind queue of `seam rlhf-grid` held-out pairs (starting PM vs trained policy), same columns as
    `spotcheck_pairs`. Deterministic in (cell, seed, n); with all cells, cells take turns (one pair each per
    round, hash order within a cell) so a short queue covers every cell equally. sample_id = the cell id
    (what a label records), dataset = the grid; a_prov / b_prov say which answer is which (role, model,
    judge score) for the reveal only — the page shows neither before the label is given."""
    from analysis.queries.rlhf import has_eval_pairs

    if not has_eval_pairs(con):
        return pd.DataFrame(columns=QUEUE_COLUMNS)
    params: dict = {"seed": int(seed), "n": max(1, min(int(n), 5000))}
    where = ""
    if cell:
        params["cell"] = cell
        where = "WHERE cell_id = $cell"
    return _df(con, f"""
        WITH e AS (
            SELECT *, row_number() OVER (PARTITION BY cell_id ORDER BY hash(cell_id, idx, $seed), idx) AS rn
            FROM rlhf_eval_pairs {where}),
        chosen AS (SELECT * FROM e ORDER BY rn, hash(cell_id, $seed), cell_id LIMIT $n),
        sides AS (
            SELECT *, start_id < trained_id AS start_is_a,
                   json_object('role', 'starting PM', 'model', policy, 'judge', start_judge) AS start_prov,
                   json_object('role', 'trained policy', 'model', policy || ' + RL on ' || reward,
                               'judge', trained_judge) AS trained_prov
            FROM chosen)
        SELECT cell_id AS sample_id, source AS dataset, CAST(NULL AS VARCHAR) AS source, prompt,
               CASE WHEN start_is_a THEN start_id ELSE trained_id END AS a_id,
               CASE WHEN start_is_a THEN start_text ELSE trained_text END AS a_text,
               CAST(CASE WHEN start_is_a THEN start_prov ELSE trained_prov END AS VARCHAR) AS a_prov,
               CASE WHEN start_is_a THEN trained_id ELSE start_id END AS b_id,
               CASE WHEN start_is_a THEN trained_text ELSE start_text END AS b_text,
               CAST(CASE WHEN start_is_a THEN trained_prov ELSE start_prov END AS VARCHAR) AS b_prov,
               (hash(start_id, trained_id, $seed + 1) % 2) = 1 AS swap, CAST(NULL AS VARCHAR) AS generator,
               'rlhf' AS kind
        FROM sides ORDER BY rn, hash(cell_id, $seed), cell_id
    """, params)


def _register_labels(con: duckdb.DuckDBPyConnection, labels: pd.DataFrame) -> None:
    """Register the labels (`_labels_in`) and the RM scores of their responses (`_label_sc`), the latter
    fetched by index (`rows_by_key`): a join or IN subquery against rm_scores would scan every score."""
    ids = list(pd.unique(pd.concat([labels["a_id"], labels["b_id"]])))
    con.register("_labels_in", labels[["a_id", "b_id", "label", "kind"]].copy())
    con.register("_label_sc", rows_by_key(con, "rm_scores", "response_id", ids, "response_id, reward, score"))


def _unregister_labels(con: duckdb.DuckDBPyConnection) -> None:
    con.unregister("_labels_in")
    con.unregister("_label_sc")


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
    _register_labels(con, labels)
    try:
        df = _df(con, """
            SELECT l.kind, ra.reward,
                   count(*) FILTER (WHERE l.label IN ('a', 'b')) AS n,
                   count(*) FILTER (WHERE (l.label = 'a' AND ra.score < rb.score)
                                       OR (l.label = 'b' AND rb.score < ra.score)) AS wrong,
                   count(*) FILTER (WHERE l.label IN ('a', 'b') AND ra.score = rb.score) AS rm_ties,
                   count(*) FILTER (WHERE l.label = 'tie') AS label_ties
            FROM _labels_in l
            JOIN _label_sc ra ON ra.response_id = l.a_id
            JOIN _label_sc rb ON rb.response_id = l.b_id AND rb.reward = ra.reward
            GROUP BY ALL ORDER BY kind, reward
        """)
    finally:
        _unregister_labels(con)
    return add_wilson(df, "wrong", "n", "mismatch")[cols]


def label_disagreements(con: duckdb.DuckDBPyConnection, labels: pd.DataFrame, reward: str,
                        limit: int = 200) -> pd.DataFrame:
    """Hand-labeled pairs where `reward` ranks the pair against the label (for the mismatch browser)."""
    cols = ["sample_id", "kind", "a_id", "b_id", "label", "score_a", "score_b", "prompt"]
    if labels is None or len(labels) == 0:
        return pd.DataFrame(columns=cols)
    _register_labels(con, labels)
    try:
        return _df(con, """
            SELECT r.sample_id, l.kind, l.a_id, l.b_id, l.label, ra.score AS score_a, rb.score AS score_b,
                   left(s.prompt, 160) AS prompt
            FROM _labels_in l
            JOIN _label_sc ra ON ra.response_id = l.a_id AND ra.reward = $reward
            JOIN _label_sc rb ON rb.response_id = l.b_id AND rb.reward = $reward
            JOIN responses r ON r.response_id = l.a_id
            JOIN samples s ON s.sample_id = r.sample_id
            WHERE (l.label = 'a' AND ra.score < rb.score) OR (l.label = 'b' AND rb.score < ra.score)
            ORDER BY abs(ra.score - rb.score) DESC LIMIT $limit
        """, {"reward": reward, "limit": int(limit)})
    finally:
        _unregister_labels(con)
