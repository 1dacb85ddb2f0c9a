#!/usr/bin/env bash
# The GPU checks docs/PERF_NOTES.md asks for, one phase per device call (each well inside its 10-minute limit),
# everything written under OUTDIR (the device tool's $OUT, which comes back). Runs from the
# tree with the GPU image's packages alone (torch, triton, transformers, numpy, pytest):
# no sqlalchemy, optuna, deap or openai needed.
#
#   bash scripts/gpu_session.sh PHASE [OUTDIR]      PHASE: env | tests | bench | profile |
#                                                   variants | eval | all-quick
#
# env: versions and the GPU; tests: the Triton kernels and the engine on CUDA against their
# references; bench: qwen3-0.6b on nanovllm-bench with the transformers peer (64 requests)
# and the floor; profile: the per-step breakdown with and without CUDA graphs; variants:
# the decode-attention grid; eval: the seed runtime through every harness stage in bf16
# (the oracle's tie tolerance and memory, docs/PERF_NOTES.md item 5). Results are also
# appended under results/ in the tree copy: copy them back from OUTDIR.
set -uo pipefail
cd "$(dirname "$0")/.."
PHASE="${1:?usage: gpu_session.sh PHASE [OUTDIR]}"
OUT="${2:-${OUT:-results/gpu}}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

phase_env() {
  { date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    "$PY" -c "import torch, triton, transformers, sys; print('python', sys.version.split()[0],
'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__,
'transformers', transformers.__version__, 'device', torch.cuda.get_device_name())"
  } 2>&1 | tee "$OUT/env.txt"
}

phase_tests() {
  "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_triton.py \
    tests/test_kernels_strides.py tests/test_engine_triton_runtime.py tests/test_slots_spec.py \
    2>&1 | tee "$OUT/pytest_cuda.log"
}

phase_bench() {
  "$PY" scripts/bench.py --model qwen3-0.6b --workload nanovllm-bench \
    --peer-max-requests 64 --csv "$OUT/bench.csv" 2>&1 | tee "$OUT/bench.log"
}

phase_profile() {
  "$PY" scripts/profile_step.py --model qwen3-0.6b --out "$OUT" 2>&1 | tee "$OUT/profile.log"
  "$PY" scripts/profile_step.py --model qwen3-0.6b --eager --out "$OUT/eager" 2>&1 \
    | tee "$OUT/profile_eager.log"
}

phase_variants() {
  "$PY" scripts/kernel_variants.py decode_attention --grid num_splits=4,8,16,32 \
    --grid block_n=32,64,128 --csv "$OUT/kernel_variants.csv" 2>&1 | tee "$OUT/variants.log"
}

phase_eval() {
  "$PY" - "$OUT" <<'PYEOF' 2>&1 | tee "$OUT/eval.log"
import json, sys, time
from fitness.harness import Harness
out = sys.argv[1]
h = Harness(device="cuda", options={"bench_repeats": 1})
t0 = time.monotonic()
r = h.evaluate({"slots": {}}, workload="nanovllm-bench", model="qwen3-0.6b")
print(f"{r.status} in {time.monotonic() - t0:.1f} s, failed stage {r.failed_stage}: {r.error}")
for s in r.stages:
    print(s.stage, s.status, f"{s.duration_s:.1f} s", json.dumps(s.metrics)[:600])
json.dump(r.to_dict(), open(f"{out}/eval.json", "w"), indent=1, default=str)
PYEOF
}

case "$PHASE" in
  env|tests|bench|profile|variants|eval) "phase_$PHASE" ;;
  all-quick) phase_env; phase_tests ;;
  *) echo "unknown phase $PHASE (env, tests, bench, profile, variants, eval, all-quick)" >&2
     exit 2 ;;
esac
