"""Finalize at scale: peak RSS and seconds of `store.finalize` at several DB sizes, and their ratios.

Why: finalize used to materialise seam_metrics in one statement whose memory grew with the data (10 GB at
1M samples; out of memory under the writer's cap). It now works one hash partition of samples at a time
under a fixed DuckDB memory cap (store.FINALIZE_PART_SAMPLES, SEAM_FINALIZE_MEMORY), so its peak memory
should not grow with the DB. Each measurement runs in a fresh child process (peak RSS = that process's
ru_maxrss) on a synthetic DB built without finalize and cached under --cache (reused on the next run;
building 3M takes tens of minutes on 2 cores):

    SEAM_DUCKDB_MEMORY=16GB python benchmarks/bench_finalize.py [--sizes 1000000 3000000] [--reps 1]

(the cap is for building the DBs and their indexes; finalize itself runs under SEAM_FINALIZE_MEMORY, 2 GB)

Prints per size: seconds, s per 1M samples, peak RSS; then the 3M/1M (last/first) ratios. `--one-statement`
also times the unpartitioned definition (one partition, same memory cap); `--baseline DIR` the finalize of
another checkout (e.g. the main branch: one statement, no aggregate tables, the writer's memory cap).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The benchmark's synthetic shape: 4 contrast + 4 adv + 1 rejected worse responses per sample, 2 PMs, 3 RMs,
#: PM samples for 5% of prompts.
SHAPE = dict(rewards=("rm-1k", "rm-10k", "rm-100k"), policy_frac=0.05)

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from analysis.storage import store
t0 = time.perf_counter()
with store.writer({db!r}) as con:   # opening migrates an older schema (e.g. builds missing indexes): timed apart
    con.execute("SET enable_progress_bar = false")
    t1 = time.perf_counter()
    store.finalize(con, **{kw!r})
    n = con.execute("SELECT count(*) FROM seam_metrics").fetchone()[0]
print(json.dumps({{"s": time.perf_counter() - t1, "open_s": t1 - t0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows": n}}))
"""

MIGRATE = """
import resource, sys, time
sys.path.insert(0, {root!r})
from analysis.storage import store
t0 = time.perf_counter()
with store.writer({db!r}) as con:
    con.execute("SET enable_progress_bar = false")
print(f"schema check / migration of {db}: {{time.perf_counter() - t0:.0f}} s, "
      f"peak RSS {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}} MB", flush=True)
"""


def raw_db(cache: Path, n: int) -> Path:
    """The cached synthetic DB of n samples (scores written, not finalized); built in a child when absent."""
    db = cache / f"raw_{n}.duckdb"
    if not db.exists():
        print(f"building {n:,}-sample synthetic DB at {db} (one-off) ...", flush=True)
        t0 = time.perf_counter()
        tmp = cache / f"raw_{n}.building.duckdb"
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from analysis.data import synthetic; "
                f"synthetic.make_synthetic_db({str(tmp)!r}, {n}, finalize=False, **{SHAPE!r})")
        subprocess.run([sys.executable, "-c", code], check=True)
        tmp.rename(db)
        print(f"built in {time.perf_counter() - t0:.0f}s", flush=True)
    # Bring a DB built by an older version up to the current schema (e.g. indexes added since) in its own
    # process, so the finalize measurements below do not include a one-off migration.
    code = MIGRATE.format(root=str(ROOT), db=str(db))
    subprocess.run([sys.executable, "-c", code], check=True)
    return db


def measure(db: Path, part_samples: int | None, code: Path = ROOT) -> dict:
    """One finalize in a fresh child process running the checkout `code`: {'s', 'rss_mb', 'rows'}."""
    kw = {} if part_samples is None else {"part_samples": part_samples}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(code), db=str(db), kw=kw)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"finalize of {db} failed (exit {out.returncode}):\n" + out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    ap.add_argument("--cache", default="/tmp/seam_bench")
    ap.add_argument("--reps", type=int, default=1, help="finalize runs per size (median reported)")
    ap.add_argument("--one-statement", action="store_true",
                    help="also time the unpartitioned definition (needs memory that grows with the DB)")
    ap.add_argument("--baseline", type=Path,
                    help="also time the finalize of another checkout (e.g. the main branch) on the same DBs")
    ap.add_argument("--only-others", action="store_true",
                    help="skip this checkout's partitioned finalize (run only --one-statement / --baseline)")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    ap_modes = [("partitioned", None, ROOT)] if not args.only_others else []
    modes = ap_modes + ([("one statement", 10**12, ROOT)] if args.one_statement else []) \
        + ([("baseline", None, args.baseline)] if args.baseline else [])
    print(f"finalize memory cap {os.environ.get('SEAM_FINALIZE_MEMORY', '2GB (default)')}, "
          f"{args.reps} rep(s) per size, median of reps; each run in a fresh process")
    print(f"{'samples':>10} {'mode':<14} {'seconds':>9} {'s / 1M':>8} {'peak RSS MB':>12} {'seam rows':>12}")
    res: dict[str, list[tuple[int, float, float]]] = {}
    for n in args.sizes:
        db = raw_db(cache, n)
        for mode, part, code in modes:
            runs = [measure(db, part, code) for _ in range(args.reps)]
            s = statistics.median(r["s"] for r in runs)
            rss = statistics.median(r["rss_mb"] for r in runs)
            res.setdefault(mode, []).append((n, s, rss))
            print(f"{n:>10,} {mode:<14} {s:9.1f} {s / n * 1e6:8.1f} {rss:12.0f} {runs[0]['rows']:>12,}"
                  + (f"   (opening + schema migration before it: {runs[0]['open_s']:.0f} s)"
                     if runs[0].get("open_s", 0) > 1 else ""), flush=True)
    for mode, rows in res.items():
        if len(rows) > 1:
            (n0, s0, r0), (n1, s1, r1) = rows[0], rows[-1]
            print(f"{mode}: {n1:,} vs {n0:,} samples: peak RSS x{r1 / r0:.2f} (target <= 1.2), "
                  f"time per sample x{(s1 / n1) / (s0 / n0):.2f}")


if __name__ == "__main__":
    main()
