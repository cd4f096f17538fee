"""Queries of the Overview page: what the DB holds and the headline RM accuracy.

The headline SEAM table is `analysis.queries.distributions.seam_summary`; hand-label mismatch is
`analysis.queries.spotcheck.label_mismatch`.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from analysis.queries.base import _counts_current, _df, add_wilson

def datasets_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per dataset: format, source, samples, distinct sub-sources, rejects."""
    s = ("dataset_counts" if _counts_current(con, "dataset_counts") else
         "(SELECT dataset, count(*) AS samples, count(DISTINCT source) AS sources FROM samples GROUP BY dataset)")
    return _df(con, f"""
        WITH s AS (SELECT * FROM {s}),
             r AS (SELECT dataset, count(*) AS rejects FROM rejects GROUP BY dataset),
             names AS (SELECT dataset FROM datasets UNION SELECT dataset FROM s UNION SELECT dataset FROM r)
        SELECT n.dataset, d.format, d.source, coalesce(s.samples, 0) AS samples,
               coalesce(s.sources, 0) AS sources, coalesce(r.rejects, 0) AS rejects
        FROM names n LEFT JOIN datasets d USING (dataset) LEFT JOIN s USING (dataset) LEFT JOIN r USING (dataset)
        ORDER BY n.dataset
    """)


def models_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every PM / RM that scored something (or is registered): model, role, scored responses, resolved path."""
    used = ("model_counts" if _counts_current(con, "model_counts") else
            "(SELECT policy AS model, 'policy' AS role, count(*) AS scored FROM pm_scores GROUP BY 1"
            " UNION ALL SELECT reward, 'reward', count(*) FROM rm_scores GROUP BY 1)")
    return _df(con, f"""
        WITH used AS (SELECT * FROM {used})
        SELECT coalesce(u.model, m.model) AS model, coalesce(u.role, m.role) AS role,
               coalesce(u.scored, 0) AS scored, m.resolved, m.sha256
        FROM used u FULL OUTER JOIN models m ON m.model = u.model AND m.role = u.role
        ORDER BY role, model
    """)


def variant_summary(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per response variant: responses, samples that have it, responses per sample."""
    counts = ("variant_counts" if _counts_current(con, "variant_counts") else
              "(SELECT variant, count(*) AS responses, count(DISTINCT sample_id) AS samples FROM responses"
              " GROUP BY variant)")
    return _df(con, f"""
        SELECT variant, responses, samples, round(responses / samples, 2) AS per_sample
        FROM {counts}
        ORDER BY CASE variant WHEN 'gold' THEN 0 WHEN 'policy' THEN 9 ELSE 1 END, variant
    """)


def reject_reasons(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Malformed input rows grouped by (dataset, reason kind — the text before ':'), with one example of the
    full reason; the detail after ':' differs row by row and made one group per row."""
    return _df(con, """
        SELECT dataset, split_part(reason, ':', 1) AS reason, count(*) AS n, min(reason) AS example
        FROM rejects GROUP BY ALL ORDER BY n DESC, dataset, reason""")


def not_selected(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Input rows left out on purpose (--fraction / --limit) per dataset: dataset, n,
    limit_reached. Empty for DBs written before this was recorded."""
    if _df(con, "SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = 'not_selected'")["n"][0] == 0:
        return pd.DataFrame(columns=["dataset", "n", "limit_reached"])
    return _df(con, "SELECT dataset, n, limit_reached FROM not_selected ORDER BY dataset")


def recent_runs(con: duckdb.DuckDBPyConnection, limit: int = 5) -> pd.DataFrame:
    """Most recent CLI runs with their status and summary JSON."""
    return _df(con, """
        SELECT run_id, command, status, started_at, finished_at,
               CAST(summary AS VARCHAR) AS summary
        FROM runs ORDER BY started_at DESC NULLS LAST, run_id DESC LIMIT $limit
    """, {"limit": int(limit)})


def rm_accuracy(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """RM accuracy on dataset pairs (gold vs each worse response), per RM and worse-variant.

    Columns: reward, variant, n, correct, wrong, ties, accuracy (+ _lo/_hi Wilson 95%), mismatch
    (= wrong / n, + _lo/_hi). Ties count in n and in neither correct nor wrong, and are shown.
    Variant 'rejected' is the classic RM accuracy on the dataset's own human pairs.
    """
    df = _df(con, "SELECT reward, variant, n, correct, wrong, ties FROM rm_accuracy ORDER BY reward, variant")
    df = add_wilson(df, "correct", "n", "accuracy")
    return add_wilson(df, "wrong", "n", "mismatch")
