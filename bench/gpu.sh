#!/usr/bin/env bash
# The GPU check, in one command, on a machine with an NVIDIA GPU (docs/performance.md, "On a GPU"):
#
#   bash bench/gpu.sh [OUT_DIR]              -> OUT_DIR/gpu-results.json (default: bench/gpu)
#
# In under 8 minutes on one GPU: the CUDA tests (tests/test_cuda.py: training both modes on the tiny and the
# real model, the load guard across devices, the export of a CUDA-trained model, DDP over NCCL when there are
# two GPUs), then the training benchmark against the plain sentence-transformers script on the GPU
# (bench/run.py --runs 2 --no-pipeline), then one results file with the machine, the tests and the figures.
# Not needed by CI. PYTHON=... picks the interpreter (default .venv/bin/python, from `make install`).
# --cpu-check runs the same steps on this CPU in small (the CUDA tests skip, a 16-step benchmark of LoRA): what
# tests/test_bench.py runs to keep the script working where no GPU is.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CPU_CHECK=0
if [ "${1:-}" = "--cpu-check" ]; then CPU_CHECK=1; shift; fi
OUT=$(realpath -m "${1:-bench/gpu}")
WORK=${GPU_WORK:-$OUT/work}      # the demo data and base folder the benchmark trains on (made here if missing)
mkdir -p "$OUT" "$WORK"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || echo "no nvidia-smi"; } \
  > "$OUT/nvidia-smi.txt"

# 1. the CUDA tests (on a CPU they skip; exit 5 = nothing collected would be a broken test file)
if [ "$CPU_CHECK" = 1 ]; then TEST_TIMEOUT=120; else TEST_TIMEOUT=300; fi
timeout "$TEST_TIMEOUT" "$PY" -m pytest tests/test_cuda.py -m cuda -q -p no:cacheprovider -o addopts="" \
  --junitxml "$OUT/cuda-tests.xml" > "$OUT/cuda-tests.log" 2>&1
tests_rc=$?

# 2. the benchmark's inputs: the demo data and the base model's folder, as `dvc repro base` makes them
if [ ! -f "$WORK/models/base/pairtune.json" ]; then
  (cd "$WORK" && cp "$OLDPWD/params.yaml" params.yaml &&
   "$PY" "$OLDPWD/stages/generate.py" --out data/demo --summary metrics/generate.json &&
   "$PY" "$OLDPWD/stages/prepare.py" --out data/prepared --summary metrics/prepare.json &&
   "$PY" "$OLDPWD/stages/base.py" --data data/prepared --out models/base) > "$OUT/setup.log" 2>&1
fi

# 3. the training benchmark, reference and pairtune alternating (the GPU trains: both use CUDA when present)
if [ "$CPU_CHECK" = 1 ]; then BENCH=(--quick --modes lora); BENCH_TIMEOUT=400; else BENCH=(--runs 2 --no-pipeline); BENCH_TIMEOUT=330; fi
read -r -a EXTRA <<< "${GPU_BENCH_ARGS:-}"   # e.g. GPU_BENCH_ARGS="--isa avx2" (the tests)
timeout "$BENCH_TIMEOUT" "$PY" bench/run.py "${BENCH[@]}" ${EXTRA[@]+"${EXTRA[@]}"} --data "$WORK/data/prepared" --base "$WORK/models/base" \
  --out "$OUT/bench.json" > "$OUT/bench.log" 2>&1
bench_rc=$?

# 4. one file with everything
"$PY" bench/gpu_report.py --out "$OUT/gpu-results.json" --smi "$OUT/nvidia-smi.txt" --junit "$OUT/cuda-tests.xml" \
  --tests-rc "$tests_rc" --bench "$OUT/bench.json" --bench-rc "$bench_rc" --wall $(( $(date +%s) - start )) \
  --logs "$OUT/cuda-tests.log" "$OUT/bench.log"
