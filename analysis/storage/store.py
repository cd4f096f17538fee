"""The results store: one DuckDB file, written in short transactions.

Why short: DuckDB lets one process hold a file read-write and then nobody else may open it, not even
read-only. The dashboard must keep working while a precompute runs, so writers open the file, commit a
unit of work and close it again (`writer()`); readers retry briefly when they hit the lock
(`connect()`). Every insert is `INSERT OR IGNORE` on content-hash keys, which is what makes a killed
run safe to rerun: finished units are skipped, half-finished ones were never committed.

All SQL that writes lives here or in analysis/storage/sql/*.sql; read queries for the app live in
analysis/queries/ (one module per dashboard page).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import duckdb
import pyarrow as pa

from analysis.errors import UserError
from analysis.storage import aggregates

SQL_FILES = ("schema.sql", "metrics.sql")

# Columns written by the pipeline, in table order (inserts name them explicitly).
COLUMNS: dict[str, tuple[str, ...]] = {
    "datasets": ("dataset", "format", "source"),
    "samples": ("sample_id", "dataset", "source_row", "source", "prompt", "gold", "rejected", "meta"),
    "rejects": ("dataset", "source_row", "reason", "raw"),
    "responses": ("response_id", "sample_id", "variant", "idx", "text", "provenance"),
    "pm_scores": ("response_id", "policy", "logprob_sum", "n_tokens", "logprob_mean"),
    "rm_scores": ("response_id", "reward", "score"),
    "prompt_embeddings": ("sample_id", "embedding"),
    "prompt_map": ("sample_id", "x", "y"),
    "rlhf_results": ("policy", "reward", "score", "source"),
    "rlhf_curves": ("source", "cell_id", "policy", "reward", "step", "rm_reward", "rm_reward_std", "kl",
                    "mean_length", "loss", "entropy"),
    "rlhf_eval_pairs": ("source", "cell_id", "policy", "reward", "idx", "prompt", "start_id", "start_text",
                        "start_judge", "trained_id", "trained_text", "trained_judge"),
}

# The data tables (not views/macros) that `table_counts` reports.
DATA_TABLES = ("datasets", "samples", "rejects", "responses", "models", "pm_scores", "rm_scores",
               "prompt_embeddings", "prompt_map")


class StoreLocked(RuntimeError, ValueError):
    """Raised when the DB stayed locked by another process for longer than the timeout.

    Also a ValueError: a lock held by someone else is a user-side condition, and the CLI prints
    ValueErrors as one line (problem, holder, fix) instead of a traceback."""


#: Seconds a writer waits for a locked DB before giving up (env var; the `lock_timeout_s` argument wins).
LOCK_TIMEOUT_ENV = "SEAM_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT_S = 300.0
#: Where the README explains how notebooks should read the DB without blocking writers.
LOCK_HELP = ("notebooks and scripts: open `duckdb.connect(db, read_only=True)` per query and close it "
             "(README: SQL interface)")


def sql_string(value: str | Path) -> str:
    """`value` as a single-quoted SQL string literal. Only for statements that take no parameters
    (COPY ... TO, SET): everything else passes values as `?` parameters."""
    return "'" + str(value).replace("'", "''") + "'"


def lock_timeout_s() -> float:
    """The writer's lock wait: $SEAM_LOCK_TIMEOUT seconds, else 300."""
    env = os.environ.get(LOCK_TIMEOUT_ENV)
    if not env:
        return DEFAULT_LOCK_TIMEOUT_S
    try:
        value = float(env)
    except ValueError:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={env!r} is not a number of seconds; e.g. {LOCK_TIMEOUT_ENV}=60") from None
    if value < 0:
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={env!r} must be >= 0 seconds")
    return value


def lock_holder(exc: Exception) -> str | None:
    """Who holds the lock, from DuckDB's error text ('... is held in /usr/bin/python3 (PID 123) ...')."""
    m = re.search(r"held in (.+?) \(PID (\d+)\)", str(exc))
    if m:
        return f"PID {m.group(2)} ({m.group(1)})"
    m = re.search(r"PID (\d+)", str(exc))
    return f"PID {m.group(1)}" if m else None


def _sql(name: str) -> str:
    return resources.files("analysis.storage").joinpath("sql", name).read_text()


def init_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create tables, views and metric macros, and migrate an older DB file in place (idempotent)."""
    for name in SQL_FILES:
        con.execute(_sql(name))
    _migrate(con)


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    """Bring a DB written by an older version up to date without rewriting any row.

    Sample ids once were hash(prompt, gold), which made the same pair in a second dataset collide with the
    first and vanish. New rows get hash(dataset, prompt, gold); rows already stored keep their ids (the
    labels sidecar and exports refer to them through response ids). The datasets that hold such rows are
    recorded once, here, so the precompute can recognise their rows on a rerun instead of adding them again."""
    if con.execute("SELECT 1 FROM seam_meta WHERE key = 'sample_ids'").fetchone():
        return
    legacy = [r[0] for r in con.execute("SELECT DISTINCT dataset FROM samples ORDER BY 1").fetchall()]
    con.execute("INSERT OR IGNORE INTO seam_meta VALUES ('sample_ids', 'per-dataset'),"
                " ('legacy_sample_id_datasets', ?)", [json.dumps(legacy)])


def legacy_sample_ids(db: str | Path, dataset: str) -> set[str]:
    """Ids of `dataset`'s rows if the DB stored them before ids included the dataset (else empty): a rerun
    maps a pair to its stored legacy id when present. Only such datasets pay for this set."""
    con = connect(db, read_only=True)
    try:
        try:
            row = con.execute("SELECT value FROM seam_meta WHERE key = 'legacy_sample_id_datasets'").fetchone()
        except duckdb.CatalogException:  # never opened for writing by this version: nothing stored yet
            return set()
        if not row or dataset not in json.loads(row[0]):
            return set()
        return {r[0] for r in con.execute("SELECT sample_id FROM samples WHERE dataset = ?", [dataset]).fetchall()}
    finally:
        con.close()


def read_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define the metric macros of metrics.sql as TEMP macros on a read-only connection.

    They shadow the copies stored in the file, so a reader always evaluates the current SEAM definition,
    also on a DB written by an older version that no writer has opened since. DuckDB binds table
    macros when they are created, so a file without the score tables (empty, not ours) gets none."""
    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary").fetchall()}
    if not {"responses", "pm_scores", "rm_scores"} <= have:
        return
    for stmt in _sql("metrics.sql").split(";\n"):
        if ("study_probe_scores" in stmt or "study_vs_gold" in stmt) and "study_probe_scores" not in have:
            continue   # a file written before the pre-registered study existed
        if "CREATE OR REPLACE MACRO" in stmt:
            con.execute(stmt.replace("CREATE OR REPLACE MACRO", "CREATE OR REPLACE TEMP MACRO"))


def _is_lock_error(exc: Exception) -> bool:
    msg = str(exc).lower()
    return "lock" in msg or "conflicting" in msg or "being used by another" in msg


def connect(db: str | Path, *, read_only: bool = True, timeout_s: float = 30.0,
            say: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the DB, retrying while another process holds the write lock.

    Readers use this per query batch and close promptly so a running precompute can get in too.
    With `say`, a wait longer than a second is announced once on stderr, naming the holder, so a
    writer blocked by a forgotten notebook connection never stalls without a word.
    """
    db = Path(db)
    if read_only and not db.exists():
        raise FileNotFoundError(f"no results DB at {db}: run `seam precompute` or `seam demo` first")
    start = time.monotonic()
    deadline = start + timeout_s
    delay = 0.05
    announced = False
    while True:
        try:
            con = duckdb.connect(str(db), read_only=read_only)
            if announced:
                print(f"[seam] {db}: lock released after {time.monotonic() - start:.0f}s; continuing",
                      file=sys.stderr, flush=True)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_error(exc):
                raise
            holder = lock_holder(exc) or "another process"
            if time.monotonic() > deadline:
                raise StoreLocked(f"{db} is locked by {holder}; gave up after {timeout_s:.0f}s. Close that "
                                  f"connection (or stop that process) and rerun; {LOCK_HELP}; wait longer with "
                                  f"{LOCK_TIMEOUT_ENV}=SECONDS") from exc
            if say and not announced and time.monotonic() - start >= 1.0:
                announced = True
                print(f"[seam] {db} is locked by {holder}; waiting up to {timeout_s:.0f}s "
                      f"({LOCK_TIMEOUT_ENV}=SECONDS to change; {LOCK_HELP})", file=sys.stderr, flush=True)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            continue
        if read_only:
            read_macros(con)
        return con


@contextmanager
def writer(db: str | Path, *, timeout_s: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short read-write session: one transaction, committed on success, rolled back on error.

    Waits for a locked DB up to `timeout_s` (default: $SEAM_LOCK_TIMEOUT, else 300 s), saying on
    stderr who holds the lock, then raises StoreLocked with one line naming the holder and the fix."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    con = connect(db, read_only=False, timeout_s=lock_timeout_s() if timeout_s is None else timeout_s, say=True)
    try:
        # Bounded memory whatever the DB size: DuckDB spills joins/aggregates to <db>.tmp beyond this.
        con.execute(f"SET memory_limit = {sql_string(memory_limit())}")
        con.execute("SET preserve_insertion_order = false")
        init_schema(con)
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        con.close()


def memory_limit() -> str:
    """DuckDB memory cap for writers: SEAM_DUCKDB_MEMORY (e.g. '8GB'), else 40% of physical RAM."""
    env = os.environ.get("SEAM_DUCKDB_MEMORY")
    if env:
        return env
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return f"{int(total * 0.4) >> 20}MB"


def _jsonify(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict] | Sequence[Sequence]) -> int:
    """INSERT OR IGNORE rows (dicts keyed by column, or tuples in COLUMNS order). Returns rows offered."""
    if not rows:
        return 0
    cols = COLUMNS[table]
    if isinstance(rows[0], dict):
        data = {c: [_jsonify(r.get(c)) for r in rows] for c in cols}
    else:
        data = {c: [_jsonify(r[i]) for r in rows] for i, c in enumerate(cols)}
    arrow = pa.table(data)
    con.register("_incoming", arrow)
    try:
        collist = ", ".join(cols)
        con.execute(f"INSERT OR IGNORE INTO {table} ({collist}) SELECT {collist} FROM _incoming")
    finally:
        con.unregister("_incoming")
    return len(rows)


def upsert_model(con: duckdb.DuckDBPyConnection, model: str, role: str, resolved: str, sha256: str,
                 info: dict) -> None:
    con.execute(
        "INSERT OR REPLACE INTO models (model, role, resolved, sha256, info) VALUES (?, ?, ?, ?, ?)",
        [model, role, resolved, sha256, json.dumps(info, sort_keys=True, default=str)],
    )


def set_alias(db: str | Path, model: str, alias: str | None, role: str | None = None) -> list[str]:
    """Give `model` (as stored in `models`; both roles unless `role`) the display name `alias`, or clear it
    (None). Why stored: model references are paths, and every dropdown of the app shows the alias instead.
    Returns the roles changed; an unknown model or an alias another model already has is a UserError."""
    if alias is not None and not alias.strip():
        raise UserError("the alias is empty; give a name, or --clear to remove one")
    with writer(db) as con:
        roles = [r[0] for r in con.execute("SELECT role FROM models WHERE model = ? AND role = coalesce(?, role)"
                                           " ORDER BY role", [model, role]).fetchall()]
        if not roles:
            known = [f"{m} ({r})" for m, r in con.execute("SELECT model, role FROM models ORDER BY role, model")
                     .fetchall()]
            raise UserError(f"no {role + ' ' if role else ''}model {model!r} in {db}; known: "
                            f"{', '.join(known) or 'none'} (`seam info` lists them)")
        if alias is not None:
            alias = alias.strip()
            clash = con.execute("SELECT model FROM models WHERE alias = ? AND model <> ?", [alias, model]).fetchone()
            if clash:
                raise UserError(f"alias {alias!r} already names {clash[0]!r}; pick another name")
        con.execute("UPDATE models SET alias = ? WHERE model = ? AND role = coalesce(?, role)", [alias, model, role])
    return roles


# The run ledger (`runs`) lives in analysis/storage/ledger.py.


# ---------------------------------------------------------------- work lists (resume)

def existing_variant_samples(con: duckdb.DuckDBPyConnection, variant: str, dataset: str,
                             generator: str | None = None) -> set[str]:
    """Sample ids of `dataset` that already have responses of `variant` (optionally by generator)."""
    sql = ("SELECT DISTINCT r.sample_id FROM responses r JOIN samples s USING (sample_id)"
           " WHERE r.variant = ? AND s.dataset = ?")
    params: list = [variant, dataset]
    if generator is not None:
        sql += " AND json_extract_string(r.provenance, '$.generator') = ?"
        params.append(generator)
    return {row[0] for row in con.execute(sql, params).fetchall()}


def pending_scores(con: duckdb.DuckDBPyConnection, kind: str, model: str, dataset: str,
                   after: str = "", limit: int = 512) -> list[tuple[str, str, str, str]]:
    """Next page of (sample_id, response_id, prompt, text) with no score from `model` yet.

    Paged by sample_id so memory stays bounded and all responses of a prompt arrive together (the PM
    shares the prompt's forward pass across them).
    """
    table, col = {"pm": ("pm_scores", "policy"), "rm": ("rm_scores", "reward")}[kind]
    return con.execute(
        f"""
        WITH todo AS (
            SELECT r.sample_id, r.response_id, r.text FROM responses r JOIN samples s USING (sample_id)
            WHERE s.dataset = ? AND r.sample_id > ?
              AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.response_id = r.response_id AND t.{col} = ?)
        ), page AS (SELECT DISTINCT sample_id FROM todo ORDER BY sample_id LIMIT ?)
        SELECT t.sample_id, t.response_id, s.prompt, t.text
        FROM todo t JOIN page USING (sample_id) JOIN samples s USING (sample_id)
        ORDER BY t.sample_id, t.response_id
        """,
        [dataset, after, model, limit],
    ).fetchall()


def iter_samples(con: duckdb.DuckDBPyConnection, dataset: str) -> list[tuple[str, str, str, str | None]]:
    """(sample_id, prompt, gold, rejected) of a dataset in a stable order."""
    return con.execute(
        "SELECT sample_id, prompt, gold, rejected FROM samples WHERE dataset = ? ORDER BY source_row",
        [dataset],
    ).fetchall()


# ---------------------------------------------------------------- finalize

#: Samples per finalize partition (env SEAM_FINALIZE_PART_SAMPLES): finalize evaluates the per-sample
#: metrics one hash partition of samples at a time, so its working set is one partition's join and rank
#: lists, whatever the DB size.
FINALIZE_PART_SAMPLES = 250_000
#: DuckDB memory cap while finalizing (env SEAM_FINALIZE_MEMORY; never above the writer's cap): with
#: partitions the work fits, and the buffer pool (cached table blocks) stays bounded too.
FINALIZE_MEMORY = "2GB"


def finalize(con: duckdb.DuckDBPyConnection, *, part_samples: int | None = None) -> None:
    """Materialise seam_metrics (alpha = 1, hard hacking), rm_accuracy and the dashboard's aggregate
    tables (analysis/storage/aggregates.py) from the scores.

    Recomputed from scratch each time, so it is idempotent and always consistent with the scores.
    seam_metrics is built per partition `hash(sample_id) % parts` (every row of a sample lands in one
    partition, and each row depends on its own sample only), so the result equals the one-statement
    `seam_at(1.0, 0.0)` + `rank_agreement_at(1.0)` while memory stays bounded by the partition size.
    Each partition is written sorted by (PM, RM, variant, descending SEAM), so DuckDB's min/max zone maps
    skip most row groups both for a page that reads one (PM, RM, variant) slice (filter page, prompt map)
    and for the browser's default "highest SEAM first" page, a top-N whose running threshold skips every
    row group below it (measured at 100k samples, SEAM order alone: 145 -> 12 ms).
    """
    part_samples = int(part_samples or os.environ.get("SEAM_FINALIZE_PART_SAMPLES") or FINALIZE_PART_SAMPLES)
    n_samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    parts = max(1, -(-n_samples // max(1, part_samples)))
    before = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    cap = os.environ.get("SEAM_FINALIZE_MEMORY") or FINALIZE_MEMORY
    con.execute(f"SET memory_limit = {sql_string(cap)}")
    if _bytes(con.execute("SELECT current_setting('memory_limit')").fetchone()[0]) > _bytes(before):
        con.execute(f"SET memory_limit = {sql_string(before)}")
    try:
        con.execute("CREATE OR REPLACE TABLE seam_metrics AS SELECT s.*, NULL::DOUBLE AS rank_agreement"
                    " FROM seam_at(1.0, 0.0) s LIMIT 0")
        for p in range(parts):
            args = "" if parts == 1 else f", sample_mod := {parts}, sample_lo := {p}, sample_keep := {p + 1}"
            con.execute(f"""
                INSERT INTO seam_metrics
                SELECT s.*, ra.rank_agreement
                FROM seam_at(1.0, 0.0{args}) s
                LEFT JOIN rank_agreement_at(1.0{args}) ra USING (sample_id, variant, policy, reward)
                ORDER BY s.policy, s.reward, s.variant, s.seam DESC NULLS LAST
            """)
        con.execute(
            """
            CREATE OR REPLACE TABLE rm_accuracy AS
            SELECT reward, variant,
                   count(*)::INTEGER                                    AS n,
                   count(*) FILTER (WHERE outcome = 'correct')::INTEGER AS correct,
                   count(*) FILTER (WHERE outcome = 'wrong')::INTEGER   AS wrong,
                   count(*) FILTER (WHERE outcome = 'tie')::INTEGER     AS ties
            FROM rm_pair_outcomes
            GROUP BY reward, variant
            """
        )
        aggregates.build(con)
    finally:
        try:
            con.execute(f"SET memory_limit = {sql_string(before)}")
        except duckdb.TransactionException:   # an error above aborted the transaction (the writer rolls it back):
            pass                              # let that error, not this one, reach the user


def _bytes(setting: str) -> float:
    """DuckDB's memory_limit text ('1.8 GiB', '953.6 MiB') in bytes."""
    m = re.match(r"\s*([\d.]+)\s*([KMGT]?i?B)", setting)
    if not m:
        return float("inf")
    unit = m.group(2).replace("i", "")
    return float(m.group(1)) * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[unit]


def table_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in DATA_TABLES + ("seam_metrics", "runs")}


# ---------------------------------------------------------------- parts (scale-out on Ray)

def load_parts(db: Path, table: str, files: Sequence[Path]) -> int:
    """Load Parquet parts of a score table into `db` in one commit (INSERT OR IGNORE: rerunnable).

    Rows whose response is not in the DB are skipped, so a part left over from another DB with the same
    name cannot leave orphan scores. Returns the number of rows in the parts."""
    if not files:
        return 0
    cols = ", ".join(COLUMNS[table])
    paths = [str(f) for f in files]
    with writer(db) as con:
        con.execute(f"INSERT OR IGNORE INTO {table} ({cols}) SELECT {cols} FROM read_parquet(?)"
                    " WHERE response_id IN (SELECT response_id FROM responses)", [paths])
        return con.execute("SELECT count(*) FROM read_parquet(?)", [paths]).fetchone()[0]


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Iterable | None = None) -> list[tuple]:
    return con.execute(sql, list(params or [])).fetchall()


# ---------------------------------------------------------------- imported RLHF results

def import_rlhf_csv(db: Path, csv: Path, source: str | None = None) -> int:
    """Load a CSV of the user's own RLHF runs (columns pm, rm, score; extra columns ignored).

    Rows with a missing model name or a non-numeric score are refused with their line numbers rather
    than skipped, so a typo never silently shrinks the saturation grid.
    """
    if not Path(csv).exists():
        raise FileNotFoundError(f"no such CSV: {csv}")
    source = source or Path(csv).name
    with writer(db) as con:
        con.execute("CREATE OR REPLACE TEMP TABLE _rlhf AS SELECT *, row_number() OVER () + 1 AS _line"
                    " FROM read_csv(?, header = true, all_varchar = true)", [str(csv)])
        cols = {c[0].lower() for c in con.execute("DESCRIBE _rlhf").fetchall()}
        missing = {"pm", "rm", "score"} - cols
        if missing:
            raise ValueError(f"{csv}: missing column(s) {sorted(missing)}; expected pm, rm, score")
        bad = con.execute("SELECT _line FROM _rlhf WHERE coalesce(trim(pm), '') = '' OR coalesce(trim(rm), '') = ''"
                          " OR TRY_CAST(score AS DOUBLE) IS NULL ORDER BY _line LIMIT 20").fetchall()
        if bad:
            raise ValueError(f"{csv}: bad rows (empty pm/rm or non-numeric score) at lines {[b[0] for b in bad]}")
        con.execute("INSERT OR REPLACE INTO rlhf_results (policy, reward, score, source)"
                    " SELECT trim(pm), trim(rm), CAST(score AS DOUBLE), ? FROM _rlhf", [source])
        return con.execute("SELECT count(*) FROM _rlhf").fetchone()[0]


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    """Whether `table` has `column` (a DB last written by an older version may not: readers do not migrate)."""
    return con.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = ?",
                       [table, column]).fetchone()[0] > 0


def _has_rlhf_grid(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the DB has the rlhf-grid columns (a DB last written by an older version has not)."""
    return _has_column(con, "rlhf_results", "cell_id") and con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'rlhf_curves'").fetchone()[0] > 0


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()[0] > 0


def write_rlhf_cell(db: Path, result: dict, curves: Sequence[dict], pairs: Sequence[dict] = ()) -> None:
    """One finished `seam rlhf-grid` cell: its result row, training curve and held-out evaluation pairs, in
    one transaction (so a cell is either recorded whole or not at all, which is what makes the grid
    resumable, and a labeled pair always belongs to a recorded cell)."""
    cols = [k for k in result]
    with writer(db) as con:
        con.execute(f"INSERT OR REPLACE INTO rlhf_results ({', '.join(cols)}, finished_at)"
                    f" VALUES ({', '.join('?' for _ in cols)}, current_timestamp)",
                    [_jsonify(result[c]) for c in cols])
        con.execute("DELETE FROM rlhf_curves WHERE cell_id = ?", [result["cell_id"]])
        insert(con, "rlhf_curves", list(curves))
        con.execute("DELETE FROM rlhf_eval_pairs WHERE cell_id = ?", [result["cell_id"]])
        insert(con, "rlhf_eval_pairs", list(pairs))


# ---------------------------------------------------------------- description (seam info, run summaries)

def describe(db: Path) -> dict:
    """What a DB holds: datasets, models, variants, counts, rejects, runs and the SEAM summary."""
    con = connect(db, read_only=True)
    try:
        def q(sql: str, params: list | None = None) -> list[dict]:
            cur = con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

        return {
            "db": str(db),
            "tables": table_counts(con),
            "datasets": q("""SELECT d.dataset, d.format, d.source,
                                    (SELECT count(*) FROM samples s WHERE s.dataset = d.dataset) AS samples,
                                    (SELECT count(*) FROM rejects r WHERE r.dataset = d.dataset) AS rejects
                             FROM datasets d ORDER BY d.dataset"""),
            "models": q("SELECT model, role, " + ("alias, " if _has_column(con, "models", "alias") else "")
                        + "resolved, sha256 FROM models ORDER BY role, model"),
            "variants": q("SELECT variant, count(*) AS responses, count(DISTINCT sample_id) AS samples"
                          " FROM responses GROUP BY variant ORDER BY variant"),
            "rejects_by_reason": q("SELECT dataset, split_part(reason, ':', 1) AS reason, count(*) AS n, min(source_row)"
                                   " AS first_row FROM rejects GROUP BY ALL ORDER BY n DESC LIMIT 20"),
            "runs": q("SELECT run_id, command, status, started_at, finished_at, pid, host, proc_start FROM runs"
                      " ORDER BY started_at DESC LIMIT 5"),
            "seam": q("SELECT variant, policy, reward, count(*) AS n, avg(seam) AS mean_seam,"
                      " median(seam) AS median_seam, avg(hack_rate) AS hack_rate"
                      " FROM seam_metrics GROUP BY ALL ORDER BY ALL"),
            "rm_accuracy": q("SELECT * FROM rm_accuracy ORDER BY reward, variant"),
            "rlhf_grid": q("SELECT r.source, r.policy, r.reward, r.score AS win_rate, r.score_lo, r.score_hi,"
                           " r.kl, r.n_eval, r.steps, (SELECT count(*) FROM rlhf_curves c"
                           " WHERE c.cell_id = r.cell_id) AS curve_steps"
                           + (", (SELECT count(*) FROM rlhf_eval_pairs e WHERE e.cell_id = r.cell_id) AS eval_pairs"
                              if _has_table(con, "rlhf_eval_pairs") else "") + " FROM rlhf_results r"
                           " WHERE r.cell_id IS NOT NULL ORDER BY ALL") if _has_rlhf_grid(con) else [],
        }
    finally:
        con.close()
