"""Writes the relations of `seam experiment` (DDL in analysis/sql/experiments.sql) into the results DB.

Same discipline as analysis/store.py: short write sessions through `store.writer`, all DDL in the
.sql file. Result relations are replaced as a whole in one transaction at the end of a run (so a failed
run leaves the previous results readable and intact). The run history is the shared ledger
(analysis/storage/ledger.py: `runs`, with `experiment_runs` as the view of the study's rows).
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from analysis.storage import ledger, store

SQL_FILE = "experiments.sql"

# Result relations in the order they are documented (the run history is the ledger, never replaced).
RESULT_TABLES = ("experiment_models", "model_quality", "saturation_grid", "saturation_curve", "saturation_picks",
                 "saturation_summary", "mismatch_rates", "seam_validation", "seam_validation_items",
                 "selection_results", "augmentation_results")


EVIDENCE_SQL_FILE = "evidence.sql"
EVIDENCE_TABLES = ("study_design", "study_items", "study_probe_scores", "study_models", "study_endpoint",
                   "study_controls", "study_power", "study_retrain", "study_saturation", "study_saturation_test",
                   "study_verdict")


def _statements(sql_file: str = SQL_FILE) -> list[str]:
    text = resources.files("analysis.storage").joinpath("sql", sql_file).read_text()
    # The DDL has no string literals, so everything after `--` is a comment (and may contain ';').
    lines = [ln.split("--", 1)[0] for ln in text.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create every experiment relation that does not exist yet, empty (readers may call this on a
    read-write connection so their queries never fail on a DB without experiment results)."""
    for stmt in _statements() + _statements(EVIDENCE_SQL_FILE):
        con.execute(stmt.replace("CREATE OR REPLACE TABLE", "CREATE TABLE IF NOT EXISTS", 1))
    ledger.ensure(con)


def reset_results(con: duckdb.DuckDBPyConnection) -> None:
    """(Re)create all result relations empty; the run ledger is kept."""
    for stmt in _statements():
        con.execute(stmt)


def _clean(v: Any) -> Any:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, default=str)
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):   # numpy scalars
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v


def columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()]


def write(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict]) -> int:
    """Append dict rows (keys = column names; missing columns are NULL, NaN becomes NULL)."""
    if table not in RESULT_TABLES + EVIDENCE_TABLES:
        raise ValueError(f"{table} is not an experiment result table")
    if not rows:
        return 0
    cols = columns(con, table)
    unknown = set().union(*(r.keys() for r in rows)) - set(cols)
    if unknown:
        raise ValueError(f"{table}: unknown columns {sorted(unknown)}")
    data = {c: [_clean(r.get(c)) for r in rows] for c in cols}
    types = dict(con.execute(f"SELECT column_name, data_type FROM information_schema.columns"
                             f" WHERE table_name = '{table}'").fetchall())
    arrow = pa.table({c: pa.array(v, type=_arrow_type(types[c])) for c, v in data.items()})
    con.register("_exp_rows", arrow)
    try:
        con.execute(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {', '.join(cols)} FROM _exp_rows")
    finally:
        con.unregister("_exp_rows")
    return len(rows)


def _arrow_type(duck: str) -> pa.DataType:
    return {"DOUBLE": pa.float64(), "INTEGER": pa.int64(), "BIGINT": pa.int64(), "BOOLEAN": pa.bool_(),
            "TIMESTAMP": pa.timestamp("us")}.get(duck, pa.string())


def write_results(db: Path, results: dict[str, list[dict]]) -> dict[str, int]:
    """Replace all result relations with `results` (table -> rows) in one transaction."""
    with store.writer(db) as con:
        reset_results(con)
        return {t: write(con, t, results.get(t, [])) for t in RESULT_TABLES}


def write_evidence(db: Path, results: dict[str, list[dict]]) -> dict[str, int]:
    """Replace the pre-registered study's relations (evidence.sql) with `results` in one transaction;
    the legacy experiment relations are left alone."""
    with store.writer(db) as con:
        for stmt in _statements(EVIDENCE_SQL_FILE):
            con.execute(stmt)
        ledger.ensure(con)
        con.execute("DELETE FROM study_probe_scores")   # schema.sql: the SEAM macros are bound to it
        return {t: write(con, t, results.get(t, [])) for t in EVIDENCE_TABLES}
