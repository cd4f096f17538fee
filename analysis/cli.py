"""`seam` command line: precompute, demo, app, info, train-rm, train-pm, experiment, import-rlhf, merge.

Plain argparse (no extra dependency); every precompute flag maps 1:1 to a PrecomputeConfig field.
Heavy imports (torch, transformers) happen inside the commands so `seam --help` and `seam info` are fast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_DB = Path("cache/seam.duckdb")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _add_precompute_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", help="JSONL/Parquet/CSV file, HF datasets id, or builtin:chatterbot")
    p.add_argument("--policy", action="append", default=[], metavar="REF",
                   help="policy model (repeatable): HF id, local dir, .gguf file, or builtin:smollm2-135m-instruct")
    p.add_argument("--reward", action="append", default=[], metavar="REF",
                   help="reward model (repeatable): any scalar AutoModelForSequenceClassification (HF id or dir)")
    p.add_argument("--variants", type=_csv_list, default=["contrast", "adv", "rejected"],
                   help="comma list of contrast,adv,generated,rejected (default: contrast,adv,rejected)")
    p.add_argument("--k", type=int, default=4, help="worse responses per sample and variant (default 4)")
    p.add_argument("--limit", type=int, help="ingest at most this many samples")
    p.add_argument("--fraction", type=float, help="keep a deterministic hash-based share of samples, e.g. 0.1")
    p.add_argument("--name", dest="dataset_name", help="dataset name in the DB (default: the reference)")
    p.add_argument("--format", default="auto", choices=["auto", "trl", "stackexchange", "hh", "gold"])
    p.add_argument("--columns", help="column mapping, e.g. prompt=question,chosen=response_j,rejected=response_k")
    p.add_argument("--split", default="train")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--token-budget", type=int, default=4096, help="padded tokens per PM batch (raise on GPU)")
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--rm-batch-size", type=int, default=16)
    p.add_argument("--contrast-threshold", type=float, default=0.9)
    p.add_argument("--generator", help="PM that writes `generated` answers (default: first --policy)")
    p.add_argument("--gen-k", type=int, help="`generated` answers per prompt (default: --k)")
    p.add_argument("--gen-max-new-tokens", type=int, default=48)
    p.add_argument("--gen-temperature", type=float, default=0.8)
    p.add_argument("--gen-batch-size", type=int, default=8)
    p.add_argument("--policy-samples", type=int, default=0,
                   help="N own samples per prompt from every PM (variant 'policy': PM-generated pairs)")
    p.add_argument("--encoder", help="sentence encoder for contrast/UMAP (default: bundled MiniLM)")
    p.add_argument("--models-dir", type=Path, help="where converted models live (default: <db dir>/models)")
    p.add_argument("--no-umap", dest="umap", action="store_false")
    p.add_argument("--shard", help="i/n: process only this shard of the samples; also writes Parquet parts")
    p.add_argument("--page-samples", type=int, default=256, help="samples per scoring commit (resume unit)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", type=Path, default=DEFAULT_DB)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_precompute(args) -> int:
    from analysis.pipeline.config import PrecomputeConfig, parse_shard
    from analysis.pipeline.precompute import dumps, run_precompute

    cfg = PrecomputeConfig(
        dataset=args.dataset, policies=args.policy, rewards=args.reward, db=args.db,
        dataset_name=args.dataset_name, format=args.format, columns=args.columns, split=args.split,
        data_dir=args.data_dir, limit=args.limit, fraction=args.fraction, variants=args.variants, k=args.k,
        seed=args.seed, device=args.device, dtype=args.dtype, token_budget=args.token_budget,
        max_length=args.max_length, rm_batch_size=args.rm_batch_size,
        contrast_threshold=args.contrast_threshold, generator=args.generator,
        gen_k=args.gen_k, gen_max_new_tokens=args.gen_max_new_tokens, gen_temperature=args.gen_temperature,
        gen_batch_size=args.gen_batch_size, policy_samples=args.policy_samples, encoder=args.encoder,
        models_dir=args.models_dir, umap=args.umap,
        shard=parse_shard(args.shard) if args.shard else None, page_samples=args.page_samples,
        progress=not args.quiet)
    summary = run_precompute(cfg)
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

    p = sub.add_parser("precompute", help="score a preference dataset with PMs and RMs into DuckDB")
    _add_precompute_args(p)
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

    from analysis.study.experiment import add_experiment_parsers  # both import torch lazily
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
