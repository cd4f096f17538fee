"""Dashboard query latency at scale: p50 / p95 of every analysis.queries function the pages call.

Why: dashboard queries must stay interactive at 1M samples (aggregate in DuckDB, never
pull whole tables into pandas). This script builds (once) a synthetic results DB of that size with
`analysis.data.synthetic.make_synthetic_db` — vectorised SQL, but still minutes and several GB on a laptop,
so it lives in /tmp and is reused — and then times each page query the way the app runs it: open the
file read-only, run, fetch, close (the app's cache is bypassed, so these are cold-cache-miss numbers).

    python benchmarks/bench_queries.py [--db /tmp/seam_bench_1m.duckdb] [--n 1000000] [--reps 5]

Prints one line per query (page, function, p50, p95, result rows) and the slowest p95 per page.
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
from analysis.queries.selection import Selection  # noqa: E402
from analysis.queries.spotcheck import label_mismatch, spotcheck_pairs  # noqa: E402
from analysis.storage import store  # noqa: E402

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
        ("export", "filter_report", filter_report, (spec,), {}),
        ("prompt-map", "prompt_map_points", prompt_map_points, (), {"variant": v, "policy": pm, "reward": rm, "max_points": 20000}),
    ]
    missing = set(PAGE_QUERIES) - {c[2] for c in out}
    assert not missing, f"page queries without a benchmark case: {sorted(f.__name__ for f in missing)}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", default="/tmp/seam_bench_1m.duckdb")
    ap.add_argument("--n", type=int, default=1_000_000, help="samples when the DB has to be built")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--policy-frac", type=float, default=0.05,
                    help="share of prompts with PM samples (policy variant) when building")
    args = ap.parse_args()
    db = Path(args.db)
    if not db.exists():
        print(f"building {args.n:,}-sample synthetic DB at {db} (one-off; minutes) ...", flush=True)
        t0 = time.perf_counter()
        synthetic.make_synthetic_db(db, args.n, policy_frac=args.policy_frac)
        print(f"built in {time.perf_counter() - t0:.0f}s", flush=True)
    con = store.connect(db, read_only=True)
    con.execute("SET enable_progress_bar = false")
    opts = filter_options(con)
    st = db_status(con)
    todo = cases(opts, con)
    con.close()
    print(f"DB {db}: {st['samples']:,} samples, {st['metrics']:,} seam_metrics rows; {args.reps} reps per query "
          "(each: connect read-only, query, fetch, close)")
    print(f"{'page':<14} {'query':<42} {'p50 ms':>9} {'p95 ms':>9} {'rows':>7}")
    worst: dict[str, tuple[float, str]] = {}
    for page, name, fn, a, kw in todo:
        times, rows = [], 0
        for _ in range(args.reps):
            t0 = time.perf_counter()
            c = store.connect(db, read_only=True)
            c.execute("SET enable_progress_bar = false")
            try:
                out = fn(c, *a, **kw)
            finally:
                c.close()
            times.append(time.perf_counter() - t0)
            rows = len(out[0]) if isinstance(out, tuple) else (len(out) if hasattr(out, "__len__") else 1)
        times.sort()
        p50 = statistics.median(times)
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        print(f"{page:<14} {name:<42} {1000 * p50:9.0f} {1000 * p95:9.0f} {rows:7d}", flush=True)
        if p95 > worst.get(page, (0, ""))[0]:
            worst[page] = (p95, name)
    print("\nslowest query per page (p95):")
    for page, (p95, name) in sorted(worst.items(), key=lambda kv: -kv[1][0]):
        print(f"  {page:<14} {1000 * p95:8.0f} ms  {name}")


if __name__ == "__main__":
    main()
