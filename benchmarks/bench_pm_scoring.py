"""PM scoring benchmark: the reference code's naive loop vs `PolicyModel.score`, same model/data/machine.

Why a script and not a timed test: speed depends on the machine and its load, so the claim we make is a *ratio
measured in one run*, with the log-prob agreement checked on the same numbers.

Arms (all on identical (prompt, response) pairs, in one process, after a warm-up):

* naive    - the reference code's loop: one question at a time, one sequence per answer, full-vocabulary
             log-softmax at every position (`analysis.models.policy.reference_logprob`);
* flat     - `PolicyModel.score` without prompt sharing: length buckets + LM head on response rows only;
* shared   - `PolicyModel.score` as shipped: the above + each prompt's KV cache shared by its k+1 responses.

Throughput is reported as sequence tokens (prompt + response + EOS of every pair, i.e. what the naive loop feeds
the model) per second, so the ratio of two tok/s figures is the ratio of wall times.

Data: chatterbot-corpus (a project dependency) question/answer pairs; each question gets its gold answer plus the
gold answers of the next k questions as the other responses (the `contrast`-variant shape, k+1 per prompt).

    .venv/bin/python benchmarks/bench_pm_scoring.py                       # SmolLM2, 40 prompts x 5 responses
    .venv/bin/python benchmarks/bench_pm_scoring.py --model builtin:gemma-3-270m --n-prompts 10

Ceiling: the decoder's bare forward pass (no padding, no LM head, no bookkeeping) on random ids at several
[rows x width] shapes of `--token-budget` tokens; the best shape's tokens/s is what a forward-bound scorer could
reach. The shipped scorer's throughput in *forwarded real tokens* (each distinct prompt once + the responses) is
printed as a fraction of it, with its time split into decoder forward, LM head (log-softmax on response rows) and
the rest (tokenization, packing, cache gathers), plus the share of padded positions in its forward passes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from analysis.models.policy import PolicyConfig, PolicyModel, encode_prompt, encode_response, reference_logprob  # noqa: E402


def chatterbot_pairs(n: int) -> list[tuple[str, str]]:
    """The first `n` distinct (question, answer) pairs of the English chatterbot corpus, in file order."""
    import yaml
    import chatterbot_corpus

    root = Path(chatterbot_corpus.__file__).parent / "data" / "english"
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in sorted(root.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conv in data.get("conversations") or []:
            if len(conv) >= 2 and isinstance(conv[0], str) and isinstance(conv[1], str):
                q, a = conv[0].strip(), conv[1].strip()
                if q and a and q.lower() not in seen:
                    seen.add(q.lower())
                    pairs.append((q, a))
    # interleave files' content a little: take every step-th pair so topics vary
    step = max(1, len(pairs) // n)
    return pairs[::step][:n]


def build_data(n_prompts: int, k: int) -> tuple[list[str], list[str]]:
    qa = chatterbot_pairs(n_prompts + k)
    questions = [q for q, _ in qa[:n_prompts]]
    answers = [a for _, a in qa]
    prompts, responses = [], []
    for i, q in enumerate(questions):
        for j in range(k + 1):  # j = 0: gold answer; j >= 1: other questions' gold answers
            prompts.append(q)
            responses.append(answers[i + j])
    return prompts, responses


def run_naive(pm: PolicyModel, prompts: list[str], responses: list[str]) -> list[tuple[float, int]]:
    """Per question, per answer: exactly what the reference code does (one forward + full log-softmax each)."""
    out = []
    for p, r in zip(prompts, responses):
        out.append(reference_logprob(pm.model, pm.tokenizer, pm.format_prompt(p), r))
    return out


def bare_forward_ceiling(pm: PolicyModel, token_budget: int, reps: int = 2) -> tuple[float, tuple[int, int], dict]:
    """(best tokens/s, its (rows, width), all shapes) of the bare decoder forward at `token_budget` tokens/pass."""
    gen = torch.Generator().manual_seed(0)
    vocab = pm.model.config.get_text_config().vocab_size
    shapes = {}
    with torch.inference_mode():
        for width in (16, 32, 64, 128, 256, 512):
            rows = max(1, token_budget // width)
            ids = torch.randint(100, vocab - 1, (rows, width), generator=gen).to(pm.device)
            pm._decoder(input_ids=ids[:1, :8])  # warm-up of this dtype/device
            t0 = time.perf_counter()
            for _ in range(reps):
                pm._decoder(input_ids=ids)
            if pm.device.type == "cuda":
                torch.cuda.synchronize()
            shapes[(rows, width)] = rows * width * reps / (time.perf_counter() - t0)
    best = max(shapes, key=shapes.get)
    return shapes[best], best, shapes


def instrument(pm: PolicyModel) -> dict:
    """Time the scorer's decoder forwards and LM-head calls and count real vs padded forwarded positions (wraps
    this instance's own methods; the numbers it computes are unchanged)."""
    stats = {"forward_s": 0.0, "head_s": 0.0, "real": 0, "padded": 0}
    forward, head = pm._forward, pm._row_logprobs
    sync = torch.cuda.synchronize if pm.device.type == "cuda" else (lambda: None)

    def timed_forward(**kw):
        ids, mask = kw["input_ids"], kw.get("attention_mask")
        stats["padded"] += ids.numel()
        stats["real"] += int(mask[:, -ids.shape[1]:].sum()) if mask is not None else ids.numel()
        t0 = time.perf_counter()
        out = forward(**kw)
        sync()
        stats["forward_s"] += time.perf_counter() - t0
        return out

    def timed_head(*args):
        t0 = time.perf_counter()
        out = head(*args)
        sync()
        stats["head_s"] += time.perf_counter() - t0
        return out

    pm._forward, pm._row_logprobs = timed_forward, timed_head
    return stats


def timed(fn, *args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:smollm2-135m-instruct")
    ap.add_argument("--models-dir", default=os.environ.get("SEAM_MODELS_DIR", "cache/models"))
    ap.add_argument("--n-prompts", type=int, default=40)
    ap.add_argument("--k", type=int, default=4, help="worse responses per prompt (k+1 responses in all)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--token-budget", type=int, default=4096)
    ap.add_argument("--skip-flat", action="store_true", help="skip the no-sharing control arm")
    ap.add_argument("--json", help="also write the results to this JSON file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts, responses = build_data(args.n_prompts, args.k)
    cfg = PolicyConfig(device=args.device, dtype=args.dtype, token_budget=args.token_budget)
    t0 = time.perf_counter()
    pm = PolicyModel(args.model, args.models_dir, cfg)
    load_s = time.perf_counter() - t0
    tok = pm.tokenizer
    seq_tokens = sum(len(encode_prompt(tok, pm.format_prompt(p))) + len(encode_response(tok, r, pm.eos_id))
                     for p, r in zip(prompts, responses))
    resp_tokens = sum(len(encode_response(tok, r, pm.eos_id)) for r in responses)
    print(f"model {args.model} ({pm.info()['family']}, {pm.dtype}, {pm.device}), loaded in {load_s:.1f}s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"data: {args.n_prompts} prompts x {args.k + 1} responses = {len(prompts)} pairs, "
          f"{seq_tokens} sequence tokens ({resp_tokens} response tokens)")

    # warm-up: first-call overheads (allocator, kernels) must not count against either arm
    pm.score(prompts[:2], responses[:2], progress=False)
    run_naive(pm, prompts[:2], responses[:2])

    results: dict[str, dict] = {}
    naive, t_naive = timed(run_naive, pm, prompts, responses)
    results["naive"] = {"seconds": t_naive}
    if not args.skip_flat:
        pm.config.share_prompt_cache = False
        flat, t_flat = timed(pm.score, prompts, responses, False)
        pm.config.share_prompt_cache = True
        results["flat"] = {"seconds": t_flat, "values": flat}
    shared, t_shared = timed(pm.score, prompts, responses, False)
    results["shared"] = {"seconds": t_shared, "values": shared}

    print(f"\n{'arm':<8} {'seconds':>8} {'seq tok/s':>10} {'speed-up':>9} {'max |dlogp|':>12}")
    for name, r in results.items():
        diff = 0.0
        if "values" in r:
            assert all(n == m for (_, n), (_, m) in zip(r["values"], naive)), "token counts differ"
            diff = max(abs(a - b) for (a, _), (b, _) in zip(r["values"], naive))
        r.update(tok_per_s=seq_tokens / r["seconds"], speedup=t_naive / r["seconds"], max_abs_diff=diff)
        print(f"{name:<8} {r['seconds']:8.2f} {r['tok_per_s']:10.1f} {r['speedup']:8.2f}x {diff:12.2e}")
    print(f"\nshared vs naive: {results['shared']['speedup']:.2f}x faster, "
          f"max |log-prob difference| {results['shared']['max_abs_diff']:.2e} nats")

    # ceiling: the bare forward at its best shape, and where the shipped scorer's time goes
    ceiling, shape, shapes = bare_forward_ceiling(pm, args.token_budget)
    stats = instrument(pm)
    _, t_inst = timed(pm.score, prompts, responses, False)
    real_tps = stats["real"] / t_inst
    other = t_inst - stats["forward_s"] - stats["head_s"]
    print("\nbare decoder forward, tokens/s by [rows x width]: "
          + ", ".join(f"{r}x{w}: {v:.0f}" for (r, w), v in shapes.items()))
    print(f"ceiling: {ceiling:.0f} tok/s at [{shape[0]} x {shape[1]}]; scorer (shared): {real_tps:.0f} forwarded "
          f"real tok/s = {real_tps / ceiling:.2f} of the ceiling (target >= 0.8)")
    print(f"where the scorer's {t_inst:.2f}s go: decoder forward {stats['forward_s'] / t_inst:.0%} "
          f"(of its positions {1 - stats['real'] / max(stats['padded'], 1):.0%} padding; forward speed "
          f"{stats['padded'] / max(stats['forward_s'], 1e-9):.0f} padded tok/s = "
          f"{stats['padded'] / max(stats['forward_s'], 1e-9) / ceiling:.2f} of the ceiling), LM head + log-softmax "
          f"{stats['head_s'] / t_inst:.0%}, rest (tokenize, pack, cache gathers) {other / t_inst:.0%}")
    results["ceiling"] = {"tok_per_s": ceiling, "shape": list(shape), "scorer_real_tok_per_s": real_tps,
                          "fraction": real_tps / ceiling, "forward_share": stats["forward_s"] / t_inst,
                          "head_share": stats["head_s"] / t_inst, "padding": 1 - stats["real"] / stats["padded"]}
    if args.json:
        summary = {k: {kk: vv for kk, vv in v.items() if kk != "values"} for k, v in results.items()}
        summary.update(model=args.model, dtype=str(pm.dtype), device=str(pm.device), pairs=len(prompts),
                       seq_tokens=seq_tokens, token_budget=args.token_budget)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
