"""PM sampling benchmark: the previous sampler (`PolicyModel.generate_hf`, i.e. `transformers.generate` on batches of
8 prompts) vs the shipped one (`PolicyModel.generate_detailed`: wide length-sorted batches, one prompt pass per
prompt, rows leave the batch at their EOS), same model, prompts and sampling settings, in one process.

Why a script and not a timed test: speed depends on the machine and its load; the claim is a ratio measured side by
side. Throughput = new tokens kept (up to and including each row's EOS, or the cap) per second of wall time; both arms
sample the same distribution from different random streams, so the token counts differ a little and tokens/s is the
fair figure (prompts/s is printed too).

Workload: the demo's two generation tasks on chatterbot questions (the demo's dataset): `policy` = 2 own samples per
prompt, `generated` = 1 wrong-answer sample per prompt under the demo's instruction, at the old demo cap (32 new
tokens) and the new one (128, to EOS).

    .venv/bin/python benchmarks/bench_generation.py                    # 32 prompts, caps 32 and 128
    .venv/bin/python benchmarks/bench_generation.py --threads 1        # a loaded 2-core box: see the report
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

import torch  # noqa: E402

from analysis.models.policy import WORSE_ANSWER_INSTRUCTION, PolicyConfig, PolicyModel  # noqa: E402
from benchmarks.bench_pm_scoring import chatterbot_pairs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=os.environ.get("SEAM_MODELS_DIR", "cache/models"))
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--caps", default="32,128", help="comma list of max_new_tokens to run")
    ap.add_argument("--old-batch", type=int, default=8, help="prompts per batch of the old sampler (its default)")
    ap.add_argument("--new-batch", type=int, default=32, help="prompts per batch of the new sampler (its default)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = [q for q, _ in chatterbot_pairs(args.n_prompts)]
    pm = PolicyModel(args.model, args.models_dir, PolicyConfig(device=args.device))
    print(f"model {args.model} ({pm.dtype}, {pm.device}); torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}; {len(prompts)} prompts")
    pm.generate_detailed(prompts[:2], n=1, max_new_tokens=4, progress=False)  # warm-up
    pm.generate_hf(prompts[:2], n=1, max_new_tokens=4, progress=False)

    tasks = [("policy", 2, None), ("generated", 1, WORSE_ANSWER_INSTRUCTION)]
    print(f"\n{'task':<10} {'cap':>4} {'arm':<4} {'seconds':>8} {'tokens':>7} {'tok/s':>7} {'prompts/s':>9} "
          f"{'cut':>5} {'ratio':>6}")
    totals = {"old": [0.0, 0], "new": [0.0, 0]}
    for cap in [int(c) for c in args.caps.split(",")]:
        for task, n, instruction in tasks:
            kw = dict(n=n, instruction=instruction, max_new_tokens=cap, temperature=0.8, top_p=0.95, seed=1,
                      progress=False)
            res = {}
            for arm, fn, bs in (("old", pm.generate_hf, args.old_batch), ("new", pm.generate_detailed,
                                                                          args.new_batch)):
                t0 = time.perf_counter()
                out = fn(prompts, batch_size=bs, detailed=True, **kw) if arm == "old" else fn(prompts, batch_size=bs,
                                                                                                **kw)
                dt = time.perf_counter() - t0
                toks = sum(g.n_tokens for row in out for g in row)
                cut = sum(g.truncated for row in out for g in row) / sum(len(row) for row in out)
                res[arm] = (dt, toks)
                totals[arm][0] += dt
                totals[arm][1] += toks
                ratio = (toks / dt) / (res["old"][1] / res["old"][0]) if arm == "new" else 1.0
                print(f"{task:<10} {cap:>4} {arm:<4} {dt:8.1f} {toks:7d} {toks / dt:7.1f} {len(prompts) / dt:9.2f} "
                      f"{cut:5.0%} {ratio:5.2f}x", flush=True)
    (t_old, k_old), (t_new, k_new) = totals["old"], totals["new"]
    print(f"\nall tasks: old {k_old / t_old:.1f} tok/s, new {k_new / t_new:.1f} tok/s -> "
          f"{(k_new / t_new) / (k_old / t_old):.2f}x tokens/s, {t_old / t_new:.2f}x less wall time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
