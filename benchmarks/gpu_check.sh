#!/usr/bin/env bash
# GPU check (issue 9): on a CUDA machine, print every speed ratio and tokens/s we claim, in one run.
#   1. PM scoring on the largest offline model (builtin:gemma-3-270m) in bf16 and fp32: naive vs shipped scorer,
#      bare-forward ceiling and the scorer's fraction of it;
#   2. PM sampling, old (transformers.generate) vs new loop, on the GPU;
#   3. a 5k-sample precompute with vLLM generation (policy samples + generated answers), its stage timings.
# Usage:  bash benchmarks/gpu_check.sh            (PYTHON=..., SEAM_MODELS_DIR=..., N_SAMPLES=... to override)
# Models resolve from $SEAM_MODELS_DIR (default cache/models); builtins are converted once from their PyPI wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
MODELS=${SEAM_MODELS_DIR:-cache/models}
MODEL=${MODEL:-builtin:gemma-3-270m}
N=${N_SAMPLES:-5000}
OUT=${OUT:-cache/gpu_check}
export HF_HUB_OFFLINE=1 SEAM_MODELS_DIR="$MODELS"
mkdir -p "$OUT"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, sys; assert torch.cuda.is_available(), 'no CUDA visible to torch (CPU wheel?)'; print('torch', torch.__version__, torch.cuda.get_device_name())"
# extras: vLLM for generation; keep going without it (the vLLM step then says why it was skipped)
"$PY" -m pip install -q -e '.[vllm]' || echo "WARNING: pip install -e .[vllm] failed; the vLLM step will be skipped"

echo "== PM scoring, $MODEL, bf16 and fp32"
for dt in bfloat16 float32; do
  "$PY" benchmarks/bench_pm_scoring.py --model "$MODEL" --models-dir "$MODELS" --device cuda --dtype "$dt" \
        --n-prompts 200 --token-budget 32768 --json "$OUT/pm_scoring_$dt.json"
done

echo "== PM sampling, old vs new loop, $MODEL"
"$PY" benchmarks/bench_generation.py --model "$MODEL" --models-dir "$MODELS" --device cuda --n-prompts 128 \
      --new-batch 128

echo "== ${N}-sample precompute with vLLM generation"
if "$PY" -c "import vllm" 2>/dev/null; then
  DATA="$OUT/data_${N}.jsonl"
  # N gold-format rows from the bundled chatterbot corpus, numbered so that every prompt is a distinct sample
  "$PY" - "$N" "$DATA" <<'PYEOF'
import json, sys
from benchmarks.bench_pm_scoring import chatterbot_pairs
n, path = int(sys.argv[1]), sys.argv[2]
qa = chatterbot_pairs(2000)
with open(path, "w") as f:
    for i in range(n):
        q, a = qa[i % len(qa)]
        f.write(json.dumps({"prompt": q if i < len(qa) else f"{q} (#{i // len(qa)})", "answer": a}) + "\n")
PYEOF
  RM="$MODELS/gpu-check-rm"
  [ -f "$RM/config.json" ] || "$PY" -m analysis.cli train-rm builtin:chatterbot --out "$RM" --max-pairs 1024 > /dev/null
  rm -f "$OUT/precompute.duckdb"
  /usr/bin/time -v "$PY" -m analysis.cli precompute "$DATA" --format gold --policy "$MODEL" --reward "$RM" \
      --db "$OUT/precompute.duckdb" --models-dir "$MODELS" --variants adv,generated --k 2 --gen-k 1 \
      --policy-samples 2 --gen-max-new-tokens 128 --generator-backend vllm --token-budget 32768 \
      --rm-batch-size 256 --no-umap --quiet 2> "$OUT/precompute.time" > "$OUT/precompute.log"
  grep -E "Maximum resident|Elapsed" "$OUT/precompute.time"
  "$PY" - "$OUT/precompute.duckdb" <<'PYEOF'
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for v, n, cut, toks in con.execute(
        "SELECT variant, count(*), avg((provenance->>'$.truncated')::BOOLEAN::INT),"
        " sum((provenance->>'$.n_tokens')::INT) FROM responses WHERE variant IN ('generated', 'policy')"
        " GROUP BY 1 ORDER BY 1").fetchall():
    print(f"{v}: {n} responses, {cut:.0%} cut at the cap, {toks} new tokens")
summary = con.execute("SELECT summary FROM runs WHERE status = 'done' ORDER BY finished_at DESC LIMIT 1").fetchone()
import json
s = json.loads(summary[0]) if summary else {}
print("stage seconds", s.get("timings_s"), "| PM scoring tok/s", s.get("pm_tokens_per_s"))
PYEOF
else
  echo "vLLM not importable: precompute step skipped"
fi
