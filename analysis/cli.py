"""`seam` command line: precompute, demo, app, info, train-rm, train-pm, experiment, import-rlhf, merge.

Plain argparse (no extra dependency); each command's flags are generated from its config dataclass
(`analysis.options`), so defaults and help text live in one place.
Heavy imports (torch, transformers) happen inside the commands so `seam --help` and `seam info` are fast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from analysis.options import DEFAULT_DB, add_arguments, from_args


def cmd_precompute(args) -> int:
    from analysis.pipeline.config import PrecomputeConfig
    from analysis.pipeline.precompute import dumps, run_precompute

    summary = run_precompute(from_args(PrecomputeConfig, args))
    print(dumps(summary))
    return 0


def cmd_demo(args) -> int:
    from analysis.pipeline.demo import DemoConfig, run_demo

    summary = run_demo(DemoConfig(db=args.db, samples=args.samples, progress=not args.quiet))
    print(json.dumps({k: summary[k] for k in ("timings_s", "table_rows", "pm_tokens_per_s", "seam_by_variant")
                      if k in summary}, indent=2, default=str))
    if args.no_app:
        return 0
    return cmd_app(args)


def cmd_app(args) -> int:
    """Start the Streamlit dashboard on the DB (localhost only unless --host says otherwise)."""
    from importlib.util import find_spec

    spec = find_spec("app")
    if spec is None or not spec.submodule_search_locations:
        print("the dashboard package `app` is not installed next to `analysis`", file=sys.stderr)
        return 2
    main = Path(list(spec.submodule_search_locations)[0]) / "main.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(main),
           "--server.address", args.host, "--server.port", str(args.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--", "--db", str(Path(args.db).resolve())]
    print(f"SEAM Lens dashboard on http://{args.host}:{args.port}  (db: {args.db})")
    return subprocess.call(cmd, env={**os.environ, "SEAM_DB": str(Path(args.db).resolve())})


def cmd_info(args) -> int:
    from analysis.pipeline.info import db_info, render_info

    info = db_info(args.db)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        render_info(info)
    return 0


def cmd_train_rm(args) -> int:
    from analysis.pipeline.demo import load_pairs
    from analysis.models.reward import RMTrainConfig, train_reward_model

    pairs = load_pairs(args.pairs, fmt=args.format, columns=args.columns, split=args.split)
    cfg = RMTrainConfig(backbone=args.backbone, max_pairs=args.max_pairs, seed=args.seed, device=args.device)
    report = train_reward_model(pairs, Path(args.out), cfg)
    print(json.dumps(report, indent=2, default=str))
    print(f"saved: {args.out}  (use it as --reward {args.out})")
    return 0


def cmd_import_rlhf(args) -> int:
    from analysis.storage.store import import_rlhf_csv

    n = import_rlhf_csv(args.db, Path(args.csv), source=args.source)
    print(f"imported {n} RLHF results from {args.csv} into {args.db}")
    return 0


def cmd_merge(args) -> int:
    from analysis.storage import store

    counts = store.merge_parts(args.db, Path(args.parts))
    print(json.dumps(counts, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="seam", description="SEAM Lens: PM-RM seamlessness analysis")
    sub = ap.add_subparsers(dest="command", required=True)

    from analysis.pipeline.config import PrecomputeConfig

    p = sub.add_parser("precompute", help="score a preference dataset with PMs and RMs into DuckDB")
    add_arguments(p, PrecomputeConfig)
    p.set_defaults(func=cmd_precompute)

    p = sub.add_parser("demo", help="offline demo: SmolLM2 PM + trained MiniLM RMs on chatterbot, then the app")
    p.add_argument("--db", type=Path, default=DEFAULT_DB)
    p.add_argument("--samples", type=int, default=None, help="demo size (default: sized for ~10 min on 2 cores)")
    p.add_argument("--no-app", action="store_true", help="precompute only")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("app", help="start the dashboard")
    p.add_argument("--db", type=Path, default=DEFAULT_DB)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default localhost only)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("info", help="what a results DB holds")
    p.add_argument("--db", type=Path, default=DEFAULT_DB)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train-rm", help="train a Bradley-Terry reward head on a frozen encoder")
    p.add_argument("pairs", help="preference data (any precompute dataset format) or builtin:chatterbot")
    p.add_argument("--out", required=True, help="output directory (a standard sequence-classification checkpoint)")
    p.add_argument("--max-pairs", type=int, help="use at most this many pairs (0 = untrained head)")
    p.add_argument("--backbone", help="encoder to freeze (default: bundled MiniLM)")
    p.add_argument("--format", default="auto")
    p.add_argument("--columns")
    p.add_argument("--split", default="train")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train_rm)

    p = sub.add_parser("import-rlhf", help="import your own RLHF results (CSV columns pm, rm, score)")
    p.add_argument("csv")
    p.add_argument("--db", type=Path, default=DEFAULT_DB)
    p.add_argument("--source", help="label for this set of runs (default: file name)")
    p.set_defaults(func=cmd_import_rlhf)

    p = sub.add_parser("merge", help="merge shard Parquet parts (from --shard runs) into one DB")
    p.add_argument("--parts", required=True, help="the parts/ folder the shards wrote")
    p.add_argument("--db", type=Path, default=DEFAULT_DB)
    p.set_defaults(func=cmd_merge)

    from analysis.study.run import add_experiment_parsers  # both import torch lazily
    from analysis.models.train_pm import add_train_pm_parser

    add_experiment_parsers(sub)
    add_train_pm_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"seam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
