"""One stage runner for every command that writes a run (precompute, the study).

It opens the run in the ledger (which first marks killed runs `interrupted`), runs named stages in order —
timing each, logging it, recording after each one what has finished so far (so an interrupted run shows
how far it got) — and closes the run as `done` or `failed`. Resume is the stages' own business: each asks
the DB (or its cached models) what is still missing, so rerunning a command redoes only that; a stage
that has nothing to do says so with `skip`.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Callable

from analysis.storage import ledger


class StageRunner:
    """`with StageRunner(db, "precompute", cfg.to_dict(), versions) as run: run.stage("ingest", fn) ...;
    run.finish(summary)`. Leaving the block without `finish` (an exception) records the run `failed`."""

    def __init__(self, db: Path, command: str, config: dict, versions: dict,
                 log: Callable[[str], None] = print, run_id: str | None = None):
        self.db, self.command, self.config, self.versions, self.log = Path(db), command, config, versions, log
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.timings: dict[str, float] = {}
        self.skipped: dict[str, str] = {}
        self.failure_info: Callable[[], dict] = dict   # extra fields for the summary of a failed run
        self._finished = False

    def __enter__(self) -> "StageRunner":
        stale = ledger.start_run(self.db, self.run_id, self.command, self.config, self.versions)
        if stale:
            self.log(f"marked {len(stale)} earlier run(s) interrupted (their process is gone): {', '.join(stale)}")
        return self

    def stage(self, name: str, fn: Callable[[], Any], *, skip: str | None = None) -> Any:
        """Run one stage (unless `skip` gives a reason), time it and record it in the ledger."""
        if skip:
            self.log(f"stage {name}: skipped ({skip})")
            self.skipped[name] = skip
            return None
        self.log(f"stage {name}")
        t0 = time.perf_counter()
        out = fn()
        self.timings[name] = round(time.perf_counter() - t0, 2)
        ledger.record_progress(self.db, self.run_id, self.progress())
        return out

    def progress(self) -> dict:
        """What has finished so far (the summary of a run that is still running or was killed)."""
        out: dict[str, Any] = {"stages_done": list(self.timings), "timings_s": dict(self.timings)}
        if self.skipped:
            out["skipped"] = dict(self.skipped)
        return out

    def finish(self, summary: dict, models: dict | None = None) -> dict:
        ledger.finish_run(self.db, self.run_id, "done", summary, models)
        self._finished = True
        return summary

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None or self._finished:
            return
        try:
            ledger.finish_run(self.db, self.run_id, "failed",
                              {"error": repr(exc), **self.progress(), **self.failure_info()})
        except Exception:
            pass   # the original error matters more than the ledger update
