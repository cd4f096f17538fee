"""The run ledger: one row per CLI invocation that writes (`runs`), for precompute and the study alike.

A row records the full config, package versions, the stages finished so far (updated after each stage, so
a killed run still says how far it got) and, at the end, the summary and status. It also records who
wrote it (pid, host and the process's start time): DuckDB writers here are short sessions, so the write
lock says nothing about whether a run is still alive, but the process does. A `running` row of this host
whose process is gone (or whose pid now belongs to a younger process) is marked `interrupted` by the next
run that starts; rows of other hosts are left alone (we cannot tell). `experiment_runs` is a view of the
study's rows, kept for the app, the notebook and older readers.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import duckdb

from analysis.storage import store

RUN_STATUSES = ("running", "done", "failed", "interrupted")

_EXPERIMENT_VIEW = """
CREATE OR REPLACE VIEW experiment_runs AS
SELECT run_id, json_extract_string(config, '$.name') AS name, status, started_at, finished_at, config,
       versions, summary
FROM runs WHERE command = 'experiment'
"""


def _proc_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, proc_start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass   # exists, owned by someone else
    now = _proc_start(pid)
    return proc_start is None or now is None or now == proc_start


def is_stale(status: str, pid: int | None, host: str | None, proc_start: str | None) -> bool:
    """Whether a ledger row says `running` but its writer process on this host is gone (readers use this
    to show such a run as interrupted before the next run records it)."""
    return (status == "running" and pid is not None and host == socket.gethostname()
            and not _alive(int(pid), proc_start))


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    """The `experiment_runs` view over `runs`; an older DB's `experiment_runs` table is moved into `runs`."""
    kind = con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'experiment_runs'"
                       " AND table_schema = 'main'").fetchone()
    if kind and kind[0] == "BASE TABLE":
        con.execute("INSERT OR IGNORE INTO runs (run_id, command, status, started_at, finished_at, config, versions,"
                    " models, summary) SELECT run_id, 'experiment', status, started_at, finished_at, config,"
                    " versions, '{}', summary FROM experiment_runs")
        con.execute("DROP TABLE experiment_runs")
    con.execute(_EXPERIMENT_VIEW)


def mark_interrupted(con: duckdb.DuckDBPyConnection, by: str) -> list[str]:
    """Mark this host's `running` rows whose process is gone as `interrupted`; returns their run ids.

    Their summary keeps what was finished (the stages recorded so far) and says which run noticed."""
    host = socket.gethostname()
    stale = [run_id for run_id, pid, proc_start in con.execute(
        "SELECT run_id, pid, proc_start FROM runs WHERE status = 'running' AND host = ? AND pid IS NOT NULL",
        [host]).fetchall() if not _alive(pid, proc_start)]
    for run_id in stale:
        con.execute("UPDATE runs SET status = 'interrupted', summary = json_merge_patch(coalesce(summary, '{}'),"
                    " ?::JSON) WHERE run_id = ?",
                    [json.dumps({"interrupted": {"detected_by": by, "note": "the process ended without finishing"
                                                 " (killed?); rerun the same command to resume"}}), run_id])
    return stale


def start_run(db: Path, run_id: str, command: str, config: dict, versions: dict) -> list[str]:
    """Record a new `running` run; first marks stale runs `interrupted` (returned)."""
    pid = os.getpid()
    with store.writer(db) as con:
        ensure(con)
        stale = mark_interrupted(con, run_id)
        con.execute(
            "INSERT OR REPLACE INTO runs (run_id, command, status, started_at, config, versions, models, summary,"
            " pid, host, proc_start) VALUES (?, ?, 'running', current_timestamp, ?, ?, '{}', '{}', ?, ?, ?)",
            [run_id, command, json.dumps(config, default=str), json.dumps(versions, default=str), pid,
             socket.gethostname(), _proc_start(pid)])
    return stale


def record_progress(db: Path, run_id: str, progress: dict) -> None:
    """Store what a running run has finished so far (its summary until it ends)."""
    with store.writer(db) as con:
        con.execute("UPDATE runs SET summary = ? WHERE run_id = ?", [json.dumps(progress, default=str), run_id])


def finish_run(db: Path, run_id: str, status: str, summary: dict, models: dict | None = None) -> None:
    if status not in RUN_STATUSES:
        raise ValueError(f"run status {status!r} is not one of {RUN_STATUSES}")
    with store.writer(db) as con:
        ensure(con)
        con.execute(
            "UPDATE runs SET status = ?, finished_at = current_timestamp, summary = ?,"
            " models = coalesce(?, models) WHERE run_id = ?",
            [status, json.dumps(summary, default=str),
             json.dumps(models, default=str) if models is not None else None, run_id])
