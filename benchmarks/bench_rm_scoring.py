"""RM scoring benchmark: the demo's RMs (Bradley-Terry heads on one frozen MiniLM) scored one after another
(`RewardModel.score` per RM, what precompute did) vs together (`score_shared`: one MiniLM pass, one head per RM),
same responses, one process, side by side; also checks that the scores agree.

The RMs are the demo's (`seam demo` trains them under <models-dir>/demo-rm-minilm-*); missing ones are trained
here on chatterbot pairs with the demo's sizes, so the script runs on a fresh checkout.

    .venv/bin/python benchmarks/bench_rm_scoring.py                      # 3 RMs, 120 prompts x 5 responses
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from analysis.models.reward import RewardModel, RMTrainConfig, score_shared, train_reward_model  # noqa: E402
from benchmarks.bench_pm_scoring import build_data  # noqa: E402


def demo_rms(models_dir: Path, sizes: list[int]) -> list[str]:
    from analysis.pipeline.demo import CHATTERBOT, demo_rm_dir, load_pairs

    refs, pairs = [], None
    for n in sizes:
        out = demo_rm_dir(models_dir, n)
        if not (out / "config.json").exists():
            pairs = pairs or load_pairs(CHATTERBOT, exclude_fraction=0.15)
            print(f"training demo RM on {n} pairs -> {out}")
            train_reward_model(pairs, out, RMTrainConfig(max_pairs=n, seed=0), progress=False)
        refs.append(str(out))
    return refs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", default=os.environ.get("SEAM_MODELS_DIR", "cache/models"))
    ap.add_argument("--sizes", default="32,256,4096", help="training pairs of the demo RMs")
    ap.add_argument("--n-prompts", type=int, default=120)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16, help="RM batch size (precompute's --rm-batch-size)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    refs = demo_rms(Path(args.models_dir), [int(s) for s in args.sizes.split(",")])
    rms = [RewardModel(r, batch_size=args.batch_size) for r in refs]
    prompts, responses = build_data(args.n_prompts, args.k)
    print(f"{len(rms)} RMs on {rms[0].info()['architecture']} ({rms[0].dtype}, {rms[0].device}); "
          f"{len(prompts)} responses; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    for rm in rms:  # warm-up
        rm.score(prompts[:4], responses[:4], progress=False)

    t0 = time.perf_counter()
    separate = [rm.score(prompts, responses, progress=False) for rm in rms]
    t_sep = time.perf_counter() - t0
    t0 = time.perf_counter()
    shared = score_shared(rms, prompts, responses)
    t_sh = time.perf_counter() - t0
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(separate, shared))
    n = len(prompts) * len(rms)
    print(f"\n{'arm':<9} {'seconds':>8} {'scores/s':>9}")
    print(f"{'separate':<9} {t_sep:8.2f} {n / t_sep:9.1f}")
    print(f"{'shared':<9} {t_sh:8.2f} {n / t_sh:9.1f}")
    print(f"\nshared vs separate: {t_sep / t_sh:.2f}x faster ({len(rms)} RMs, ideal {len(rms)}x), "
          f"max |score difference| {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
