"""`seam` command line: precompute, demo, app, info, alias, train-rm, train-pm, experiment, import-rlhf, rlhf-grid.

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
from dataclasses import dataclass
from pathlib import Path

from analysis.errors import describe
from analysis.options import DEFAULT_DB, add_arguments, from_args, opt


def cmd_precompute(args) -> int:
    from analysis.pipeline.config import PrecomputeConfig
    from analysis.pipeline.precompute import dumps, run_precompute

    summary = run_precompute(from_args(PrecomputeConfig, args))
    print(dumps(summary))
    return 0


@dataclass
class AppOptions:
    """`seam app` (and the app half of `seam demo`)."""

    db: Path = opt(DEFAULT_DB, "results DuckDB file (opened read-only)")
    host: str = opt("127.0.0.1", "bind address (localhost only unless you ask for another)")
    port: int = opt(8501, "port")


@dataclass
class DemoOptions:
    no_app: bool = opt(False, "precompute only; do not start the dashboard")


@dataclass
class InfoOptions:
    db: Path = opt(DEFAULT_DB, "results DuckDB file")
    json: bool = opt(False, "machine-readable output")


@dataclass
class AliasOptions:
    """`seam alias MODEL NAME`: the dashboard shows NAME for a model reference (a long path)."""

    model: str = opt(help="model reference as stored (`seam info` lists them)", positional=True)
    name: str | None = opt(None, "display name in the dashboard", positional=True)
    role: str | None = opt(None, "only the policy or only the reward model of that reference",
                           choices=("policy", "reward"))
    clear: bool = opt(False, "remove the alias (the dashboard shows the short name again)")
    db: Path = opt(DEFAULT_DB, "results DuckDB file")


@dataclass
class TrainSource:
    """Where `train-rm` / `train-pm` read their data and write their checkpoint."""

    data: str = opt(help="preference or gold-answer data (any precompute dataset format) or builtin:chatterbot",
                    positional=True)
    out: str = opt(help="output directory (a standard transformers checkpoint)")
    format: str = opt("auto", "row format", choices=("auto", "trl", "stackexchange", "hh", "gold"))
    columns: str | None = opt(None, "column mapping, e.g. prompt=question,chosen=response_j")
    split: str = opt("train", "split of an HF datasets id")
    quiet: bool = opt(False, "no progress bars")


@dataclass
class ImportOptions:
    csv: str = opt(help="CSV with columns pm, rm, score", positional=True)
    db: Path = opt(DEFAULT_DB, "results DuckDB file")
    source: str | None = opt(None, "label for this set of runs (default: file name)")


def cmd_demo(args) -> int:
    from analysis.pipeline.demo import DemoConfig, run_demo

    summary = run_demo(from_args(DemoConfig, args))
    print(json.dumps({k: summary[k] for k in ("timings_s", "table_rows", "pm_tokens_per_s", "seam_by_variant")
                      if k in summary}, indent=2, default=str))
    if args.no_app:
        return 0
    return cmd_app(args)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def cmd_app(args) -> int:
    """Start the Streamlit dashboard on the DB (localhost only unless --host says otherwise).

    Why exec and not a child process: with `subprocess.call` a SIGTERM (systemd, docker stop, kill)
    ended this wrapper and left the Streamlit server running on the port. Replacing the process
    means the signal reaches the server itself.
    """
    from importlib.util import find_spec

    opts = from_args(AppOptions, args)
    spec = find_spec("app")
    if spec is None or not spec.submodule_search_locations:
        print("the dashboard package `app` is not installed next to `analysis`", file=sys.stderr)
        return 2
    main = Path(list(spec.submodule_search_locations)[0]) / "main.py"
    db = str(Path(opts.db).resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(main),
           "--server.address", opts.host, "--server.port", str(opts.port),
           "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--", "--db", db]
    if opts.host not in LOOPBACK:
        print(f"warning: --host {opts.host} makes the dashboard reachable from other machines: anyone who can "
              "reach the port reads the data and can write labels and exports. "
              + ("SEAM_APP_PASSWORD is set: a password is required." if os.environ.get("SEAM_APP_PASSWORD")
                 else "Set SEAM_APP_PASSWORD=<secret> to require a password."), file=sys.stderr)
    print(f"SEAM Lens dashboard on http://{opts.host}:{opts.port}  (db: {opts.db})", flush=True)
    sys.stderr.flush()
    env = {**os.environ, "SEAM_DB": db}
    if os.name == "posix":
        os.execve(sys.executable, cmd, env)  # does not return
    proc = subprocess.Popen(cmd, env=env)  # pragma: no cover (Windows: no exec; stop the child ourselves)
    try:
        return proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()


def cmd_info(args) -> int:
    from analysis.pipeline.info import db_info, render_info
    from analysis.pipeline.preflight import check_db

    opts = from_args(InfoOptions, args)
    check_db(opts.db, must_exist=True)
    info = db_info(opts.db)
    if opts.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        render_info(info)
    return 0


def cmd_alias(args) -> int:
    from analysis.errors import UserError
    from analysis.pipeline.preflight import check_db
    from analysis.storage.store import set_alias

    opts = from_args(AliasOptions, args)
    if (opts.name is None) != opts.clear:
        raise UserError("give a NAME, or --clear to remove the alias (not both)")
    check_db(opts.db, must_exist=True)
    roles = set_alias(opts.db, opts.model, None if opts.clear else opts.name, role=opts.role)
    what = "alias removed" if opts.clear else f"shown as {opts.name.strip()!r}"
    print(f"{opts.model} ({', '.join(roles)}): {what} in the dashboard")
    return 0


def cmd_train_rm(args) -> int:
    from analysis.models.reward import RMTrainConfig, train_reward_model
    from analysis.pipeline.demo import load_pairs

    src = from_args(TrainSource, args)
    pairs = load_pairs(src.data, fmt=src.format, columns=src.columns, split=src.split)
    report = train_reward_model(pairs, Path(src.out), from_args(RMTrainConfig, args))
    print(json.dumps(report, indent=2, default=str))
    print(f"saved: {src.out}  (use it as --reward {src.out})")
    return 0


def cmd_train_pm(args) -> int:
    from analysis.models.train_pm import PMTrainConfig, load_examples, train_policy_model

    src = from_args(TrainSource, args)
    examples = load_examples(src.data, fmt=src.format, columns=src.columns, split=src.split)
    report = train_policy_model(examples, Path(src.out), from_args(PMTrainConfig, args), progress=not src.quiet)
    print(json.dumps({k: v for k, v in report.items() if k != "loss_curve"}, indent=2, default=str))
    print(f"saved: {src.out}  (use it as --policy {src.out})")
    return 0


def cmd_import_rlhf(args) -> int:
    from analysis.storage.store import import_rlhf_csv

    opts = from_args(ImportOptions, args)
    n = import_rlhf_csv(opts.db, Path(opts.csv), source=opts.source)
    print(f"imported {n} RLHF results from {opts.csv} into {opts.db}")
    return 0


@dataclass
class StudyOptions:
    quick: bool = opt(False, "tiny sizes for CI (a few minutes on 2 CPU cores); flags given still win")


def cmd_experiment(args) -> int:
    from analysis.study.config import ExperimentConfig

    if getattr(args, "human", None) is not None:
        from analysis.study.prereg_config import HumanStudyConfig
        from analysis.study.prereg_run import run_study

        summary = run_study(HumanStudyConfig.from_args(args))
    else:
        from analysis.study.run import run_experiment

        summary = run_experiment(ExperimentConfig.from_args(args))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_rlhf_grid(args) -> int:
    from analysis.study.rlhf_grid import RLHFGridConfig, run_rlhf_grid

    summary = run_rlhf_grid(from_args(RLHFGridConfig, args))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """One sub-command per config: the flags come from the dataclasses above and in the packages."""
    from analysis.models.configs import RMTrainConfig
    from analysis.models.configs import PMTrainConfig
    from analysis.pipeline.config import PrecomputeConfig
    from analysis.pipeline.demo import DemoConfig
    from analysis.study.config import ExperimentConfig
    from analysis.study.rlhf_grid import RLHFGridConfig
    from analysis.study.prereg_config import HumanStudyConfig

    ap = argparse.ArgumentParser(prog="seam", description="SEAM Lens: PM-RM seamlessness analysis")
    ap.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = ap.add_subparsers(dest="command", required=True)
    commands = [
        ("precompute", "score a preference dataset with PMs and RMs into DuckDB", cmd_precompute,
         [(PrecomputeConfig, ())]),
        ("demo", "offline demo: SmolLM2 PM + trained MiniLM RMs on chatterbot, then the app", cmd_demo,
         [(DemoConfig, ()), (DemoOptions, ()), (AppOptions, ("db",))]),
        ("app", "start the dashboard", cmd_app, [(AppOptions, ())]),
        ("info", "what a results DB holds", cmd_info, [(InfoOptions, ())]),
        ("alias", "a display name for a model in the dashboard (--clear removes it)", cmd_alias,
         [(AliasOptions, ())]),
        ("train-rm", "train a Bradley-Terry reward head on a frozen encoder", cmd_train_rm,
         [(TrainSource, ("quiet",)), (RMTrainConfig, ())]),
        ("train-pm", "a few steps of SFT of a policy model on gold answers (a PM checkpoint)", cmd_train_pm,
         [(TrainSource, ()), (PMTrainConfig, ())]),
        ("import-rlhf", "import your own RLHF results (CSV columns pm, rm, score)", cmd_import_rlhf,
         [(ImportOptions, ())]),
        ("experiment", "with --human: the pre-registered study of SEAM against human labels (splits, RM grid, "
                       "SEAM variants, controls, acquisition, selection); without: the exploratory miniature "
                       "(saturation, mismatch, selection, augmentation; offline)", cmd_experiment,
         [(StudyOptions, ()), (ExperimentConfig, ()), (HumanStudyConfig, ())]),
        ("rlhf-grid", "real online RL (TRL RLOO) per PM x RM cell, judged on held-out prompts", cmd_rlhf_grid,
         [(RLHFGridConfig, ())]),
    ]
    for name, help_text, func, configs in commands:
        p = sub.add_parser(name, help=help_text, description=help_text)
        for cls, exclude in configs:
            add_arguments(p, cls, exclude=exclude)
        p.set_defaults(func=func)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command. A user error prints one line (problem, value, fix) and exits 2; `--debug` shows the
    traceback instead. Output piped into a reader that stops early (`| head`) ends quietly."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away: send the rest to /dev/null so Python's exit flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        line = describe(exc)
        if args.debug or line is None:
            raise
        print(f"seam {args.command}: error: {line}  (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
