"""Config dataclasses generate the CLI: every field is a flag, defaults come from the dataclass only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from analysis.cli import build_parser
from analysis.models.configs import PMTrainConfig, RMTrainConfig
from analysis.options import from_args
from analysis.pipeline.config import PrecomputeConfig
from analysis.pipeline.demo import DemoConfig


def _sub(name: str):
    ap = build_parser()
    (action,) = [a for a in ap._subparsers._group_actions]  # the sub-command table
    return action.choices[name]


def _dests(parser) -> set[str]:
    return {a.dest for a in parser._actions}


@pytest.mark.parametrize("command,cls", [("precompute", PrecomputeConfig), ("train-rm", RMTrainConfig),
                                         ("train-pm", PMTrainConfig), ("demo", DemoConfig)])
def test_every_cli_field_is_a_flag(command, cls):
    fields = {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}
    missing = fields - _dests(_sub(command))
    assert not missing, f"`seam {command}` lacks flags for {cls.__name__} fields {sorted(missing)}"


def test_defaults_come_from_the_dataclass():
    args = build_parser().parse_args(["precompute", "data.jsonl"])
    got = from_args(PrecomputeConfig, args)
    want = PrecomputeConfig(dataset="data.jsonl")
    diff = {k: (v, getattr(want, k)) for k, v in vars(got).items() if v != getattr(want, k)}
    assert not diff, f"flags not given must keep the dataclass defaults; differing (got, want): {diff}"


def test_flags_map_to_fields():
    argv = ["precompute", "d.jsonl", "--policy", "p1", "--policy", "p2", "--reward", "r", "--variants",
            "adv, contrast", "--k", "8", "--name", "N", "--ray", "auto", "--no-umap", "--quiet", "--db", "x.duckdb",
            "--gen-temperature", "0.5", "--fraction", "0.25"]
    cfg = from_args(PrecomputeConfig, build_parser().parse_args(argv))
    want = dict(policies=["p1", "p2"], rewards=["r"], variants=["adv", "contrast"], k=8, dataset_name="N",
                ray="auto", umap=False, progress=False, db=Path("x.duckdb"), gen_temperature=0.5, fraction=0.25)
    wrong = {k: (getattr(cfg, k), v) for k, v in want.items() if getattr(cfg, k) != v}
    assert not wrong, f"flag -> field mapping wrong (got, want): {wrong}"


def test_training_flags():
    cfg = from_args(RMTrainConfig, build_parser().parse_args(
        ["train-rm", "pairs.jsonl", "--out", "o", "--max-pairs", "0", "--no-train-pooler", "--lr", "0.001"]))
    assert (cfg.max_pairs, cfg.train_pooler, cfg.lr, cfg.epochs) == (0, False, 0.001, RMTrainConfig.epochs), cfg
    with pytest.raises(SystemExit):  # --out is required: argparse says so in one line
        build_parser().parse_args(["train-pm", "data.jsonl"])


def test_help_shows_defaults_once():
    text = _sub("precompute").format_help()
    assert "(default: 4)" in text and "(default: cache/seam.duckdb)" in text, text
    assert "(default: True)" not in text, "boolean flags must not print a misleading default"
