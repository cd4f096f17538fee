"""Dashboard query latency at scale: p50 / p95 of every analysis.queries function the pages call.

Why: dashboard queries must stay interactive at 1M samples (aggregate in DuckDB, never
pull whole tables into pandas). This script builds (once) a synthetic results DB of that size with
`analysis.data.synthetic.make_synthetic_db` — vectorised SQL, but still minutes and several GB on a laptop,
so it lives in /tmp and is reused — and then times each page query the way the app runs it: open the
file read-only, run, fetch, close (the app's cache is bypassed, so these are cold-cache-miss numbers).

    SEAM_DUCKDB_MEMORY=16GB python benchmarks/bench_queries.py [--sizes 100000 1000000 3000000] [--reps 7] [--pages]

(building the 3M DB holds its score tables' keys in memory: it needs that 16 GB cap and ~36 GB of disk)

DBs are cached as /tmp/seam_bench/raw_<n>.duckdb (shared with bench_finalize.py). Prints one line per
query (page, function, p50 and p95 per size, sizes interleaved), then p95 side by side with the growth ratio
between the last two sizes, and with --pages the seconds of each page's full run (AppTest).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.data import synthetic  # noqa: E402
from analysis.queries.base import db_status, filter_options, table_counts  # noqa: E402
from analysis.queries.browser import (BrowseFilter, browse_count, browse_page, response_scores,  # noqa: E402
                                      sample_info, sample_responses)
from analysis.queries.distributions import seam_report, seam_summary  # noqa: E402
from analysis.queries.filtering import FilterSpec, filter_report  # noqa: E402
from analysis.queries.overview import (datasets_summary, models_summary, recent_runs, reject_reasons,  # noqa: E402
                                       rm_accuracy, variant_summary)
from analysis.queries.prompt_map import prompt_map_points  # noqa: E402
from analysis.queries.saturation import axis_quality, proxy_grid, rlhf_grid, saturation_grid  # noqa: E402
from analysis.queries.selection import NONDEFAULT_MAX_SAMPLES, Selection  # noqa: E402
from analysis.queries.spotcheck import label_mismatch, spotcheck_pairs  # noqa: E402
from analysis.storage import aggregates, store  # noqa: E402

# The synthetic shape (bench_finalize.py builds the same DBs): 4 contrast + 4 adv + 1 rejected worse responses
# per sample, 2 PMs, 3 RMs.
SHAPE = dict(rewards=("rm-1k", "rm-10k", "rm-100k"))

# The functions the dashboard pages call (the benchmark times each of them with the pages' arguments).
PAGE_QUERIES = (db_status, filter_options, table_counts, datasets_summary, models_summary, variant_summary,
                reject_reasons, recent_runs, rm_accuracy, seam_summary, label_mismatch, rlhf_grid, saturation_grid,
                proxy_grid, axis_quality, browse_count, browse_page, seam_report, sample_info, sample_responses,
                spotcheck_pairs, response_scores, filter_report, prompt_map_points)


def cases(opts: dict, con) -> list[tuple[str, str, Callable, tuple, dict]]:
    """(page, label, function, args, kwargs) — the calls the pages make with their default widget values,
    plus the non-default SEAM definition (alpha / tau sliders), which evaluates the seam_at macro."""
    v = "adv" if "adv" in opts["variants"] else opts["variants"][0]
    pm, rm = opts["policies"][0], opts["rewards"][-1]
    spec = FilterSpec(variant=v, policy=pm, reward=rm, mode="top", q=0.1)
    spot = spotcheck_pairs(con, kind="policy", n=50, seed=0)
    labels = pd.DataFrame({"a_id": spot["a_id"], "b_id": spot["b_id"],
                           "label": (["a", "b", "tie"] * 20)[:len(spot)], "kind": "policy"})
    sid = browse_page(con, BrowseFilter(), page=1, page_size=1)["sample_id"].iloc[0]
    dist = Selection(variants=opts["variants"], policies=[pm], rewards=[rm])
    out = [
        ("all", "db_status", db_status, (), {}),
        ("all", "filter_options", filter_options, (), {}),
        ("overview", "table_counts", table_counts, (), {}),
        ("overview", "datasets_summary", datasets_summary, (), {}),
        ("overview", "models_summary", models_summary, (), {}),
        ("overview", "variant_summary", variant_summary, (), {}),
        ("overview", "reject_reasons", reject_reasons, (), {}),
        ("overview", "recent_runs", recent_runs, (5,), {}),
        ("overview", "rm_accuracy", rm_accuracy, (), {}),
        ("overview", "seam_summary", seam_summary, (Selection(),), {}),
        ("overview", "label_mismatch", label_mismatch, (labels,), {}),
        ("saturation", "rlhf_grid", rlhf_grid, (), {}),
        ("saturation", "saturation_grid", saturation_grid, (), {}),
        ("saturation", "proxy_grid", proxy_grid, (), {"variant": v, "beta": 1.0}),
        ("saturation", "axis_quality", axis_quality, (), {"variant": v}),
        ("saturation", "browse_count", browse_count, (BrowseFilter(variants=(v,), policies=(pm,), rewards=(rm,)),), {}),
        ("saturation", "browse_page", browse_page, (BrowseFilter(variants=(v,), policies=(pm,), rewards=(rm,)),),
         {"page_size": 10}),
        ("distributions", "seam_report", seam_report, (dist,), dict(corr_policy=pm, corr_reward=rm)),
        ("distributions", "seam_report[ECDF]", seam_report, (dist,), dict(plot="ECDF", corr_policy=pm, corr_reward=rm)),
        ("distributions", "seam_report[alpha=.5,tau=1]", seam_report, (dist.but(alpha=0.5, tau=1.0),),
         dict(corr_policy=pm, corr_reward=rm)),
        ("browser", "browse_count", browse_count, (BrowseFilter(),), {}),
        ("browser", "browse_page", browse_page, (BrowseFilter(),), {}),
        ("browser", "browse_page[search]", browse_page, (BrowseFilter(search="memory leak"),), {}),
        ("browser", "browse_page[regex]", browse_page, (BrowseFilter(search=r"python (error|install)", regex=True),), {}),
        ("browser", "browse_page[page 200, sort hack_rate]", browse_page, (BrowseFilter(),),
         {"page": 200, "sort": "hack_rate"}),
        ("browser", "sample_info", sample_info, (sid,), {}),
        ("browser", "sample_responses", sample_responses, (sid,), {"variant": v, "policy": pm, "reward": rm}),
        ("spotcheck", "spotcheck_pairs[policy]", spotcheck_pairs, (), {"kind": "policy", "n": 50, "seed": 1}),
        ("spotcheck", "spotcheck_pairs[dataset, stratified]", spotcheck_pairs, (), {"kind": "dataset", "variant": v, "n": 50,
                                                                   "seed": 1, "stratify": "source"}),
        ("spotcheck", "response_scores[whole queue]", response_scores, (sorted(set(spot["a_id"]) | set(spot["b_id"])),), {}),
        ("spotcheck", "label_mismatch", label_mismatch, (labels,), {}),
        ("export", "filter_report", filter_report, (spec,), {"max_samples": NONDEFAULT_MAX_SAMPLES}),
        ("prompt-map", "prompt_map_points", prompt_map_points, (), {"variant": v, "policy": pm, "reward": rm, "max_points": 20000}),
    ]
    missing = set(PAGE_QUERIES) - {c[2] for c in out}
    assert not missing, f"page queries without a benchmark case: {sorted(f.__name__ for f in missing)}"
    return out


def ensure_db(cache: Path, n: int, policy_frac: float) -> Path:
    """The finalized synthetic DB of n samples under `cache` (the one bench_finalize.py builds and
    finalizes; built here when absent, finalized when its aggregate tables are missing)."""
    db = cache / f"raw_{n}.duckdb"
    if not db.exists():
        print(f"building {n:,}-sample synthetic DB at {db} (one-off; minutes) ...", flush=True)
        t0 = time.perf_counter()
        tmp = cache / f"raw_{n}.building.duckdb"
        synthetic.make_synthetic_db(tmp, n, policy_frac=policy_frac, finalize=False, **SHAPE)
        tmp.rename(db)
        print(f"built in {time.perf_counter() - t0:.0f}s", flush=True)
    con = store.connect(db, read_only=True)
    have = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    con.close()
    if not set(aggregates.TABLES) <= have:
        print(f"finalizing {db} ...", flush=True)
        t0 = time.perf_counter()
        with store.writer(db) as con:
            store.finalize(con)
        print(f"finalized in {time.perf_counter() - t0:.0f}s", flush=True)
    return db


def time_queries(dbs: dict[str, Path], reps: int) -> dict[str, dict[tuple[str, str], tuple[float, float, int]]]:
    """{size label: {(page, query): (p50 s, p95 s, rows)}} for every benchmark case on every DB.

    Sizes are interleaved (each repetition of a query runs on every DB in turn), so a load spike from
    other work on the machine hits all sizes alike and the growth ratios stay meaningful."""
    todo = {}
    for label, db in dbs.items():
        con = store.connect(db, read_only=True)
        con.execute("SET enable_progress_bar = false")
        opts, st = filter_options(con), db_status(con)
        todo[label] = cases(opts, con)
        con.close()
        print(f"DB {label}: {db}, {st['samples']:,} samples, {st['metrics']:,} seam_metrics rows")
    print(f"{reps} reps per query and size, sizes interleaved (each: connect read-only, query, fetch, close)")
    labels = list(dbs)
    print(f"{'page':<14} {'query':<42} " + " ".join(f"{'p50 ' + l:>14} {'p95 ' + l:>14}" for l in labels))
    out: dict = {label: {} for label in labels}
    for i, (page, name, *_rest) in enumerate(todo[labels[0]]):
        times: dict = {label: [] for label in labels}
        rows: dict = {}
        for _ in range(reps):
            for label in labels:
                _page, _name, fn, a, kw = todo[label][i]
                t0 = time.perf_counter()
                c = store.connect(dbs[label], read_only=True)
                c.execute("SET enable_progress_bar = false")
                try:
                    res = fn(c, *a, **kw)
                finally:
                    c.close()
                times[label].append(time.perf_counter() - t0)
                rows[label] = len(res[0]) if isinstance(res, tuple) else (len(res) if hasattr(res, "__len__") else 1)
        cells = []
        for label in labels:
            ts = sorted(times[label])
            p50 = statistics.median(ts)
            p95 = ts[min(len(ts) - 1, int(round(0.95 * (len(ts) - 1))))]
            out[label][(page, name)] = (p50, p95, rows[label])
            cells.append(f"{1000 * p50:14.0f} {1000 * p95:14.0f}")
        print(f"{page:<14} {name:<42} " + " ".join(cells), flush=True)
    return out


PAGES = {"overview": {}, "saturation": {}, "distributions": {},
         "distributions[alpha=.5,tau=1]": {"d_alpha": "0.5", "d_soft": "true", "d_tau": "1.0"},
         "browser": {}, "spotcheck": {}, "export": {}, "prompt_map": {}}


def time_pages(db: Path, reps: int) -> dict[str, float]:
    """Median seconds of a full script run of each page in Streamlit's AppTest (fresh cache each run):
    every query, table and chart of the page, i.e. the server side of 'time to interactive'."""
    import os
    import tempfile

    import streamlit as st
    from streamlit.testing.v1 import AppTest
    tmp = Path(tempfile.mkdtemp())
    os.environ.update(SEAM_DB=str(db), SEAM_LABELS=str(tmp / "labels.sqlite"), SEAM_EXPORTS=str(tmp / "exports"))
    out = {}
    for label, query in PAGES.items():
        page = label.split("[")[0]
        times = []
        for _ in range(reps):
            at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=600)
            at.run()
            at.query_params.update(query)
            st.cache_data.clear()   # after the landing page's run: the timed page starts cold
            t0 = time.perf_counter()
            at.switch_page(f"views/{page}.py").run()
            times.append(time.perf_counter() - t0)
            assert not at.exception, [e.value for e in at.exception]
        out[label] = statistics.median(times)
        print(f"  page {label:<34} {out[label]:6.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    ap.add_argument("--cache", default="/tmp/seam_bench", help="folder of the cached synthetic DBs")
    ap.add_argument("--db", help="time one existing DB instead of --sizes")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--pages", action="store_true", help="also time each page's full run in AppTest")
    ap.add_argument("--policy-frac", type=float, default=0.05,
                    help="share of prompts with PM samples (policy variant) when building")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    dbs = [(Path(args.db).name, Path(args.db))] if args.db else \
        [(f"{n:,}", ensure_db(cache, n, args.policy_frac)) for n in args.sizes]
    res = time_queries(dict(dbs), args.reps)
    pages = {label: time_pages(db, max(1, args.reps // 3)) for label, db in dbs} if args.pages else {}
    labels = list(res)
    print("\np95 ms per query and size" + (f"; growth = p95 {labels[-1]} / p95 {labels[-2]} (target <= 1.3)"
                                           if len(labels) > 1 else ""))
    print(f"{'page':<14} {'query':<42} " + " ".join(f"{l:>11}" for l in labels) + ("   growth" if len(labels) > 1 else ""))
    for key in res[labels[0]]:
        p95 = [res[l][key][1] for l in labels]
        growth = f"   x{p95[-1] / p95[-2]:.2f}" if len(labels) > 1 else ""
        print(f"{key[0]:<14} {key[1]:<42} " + " ".join(f"{1000 * v:11.0f}" for v in p95) + growth)
    for l in labels:
        worst = max(res[l].items(), key=lambda kv: kv[1][1])
        over = [k[1] for k, v in res[l].items() if v[1] > 0.3]
        print(f"{l}: slowest p95 {1000 * worst[1][1]:.0f} ms ({worst[0][0]} {worst[0][1]}); "
              f"{len(over)} of {len(res[l])} queries over 300 ms" + (f": {', '.join(over)}" if over else ""))
    if pages:
        print("\npage seconds (median, AppTest full run)")
        print(f"{'page':<34} " + " ".join(f"{l:>11}" for l in pages))
        for p in PAGES:
            print(f"{p:<34} " + " ".join(f"{pages[l][p]:11.2f}" for l in pages))


if __name__ == "__main__":
    main()
