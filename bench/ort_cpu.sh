#!/usr/bin/env bash
# The README's edge benchmark: ORT int4 vs ORT fp32 vs torch int4 (and int8-dq), and llama.cpp Q4_K_M where
# llama-cpp-python is installed, on the embedded SmolLM2,
# CPU, one run. Usage: bench/ort_cpu.sh [extra harness run options]; writes results/bench-ort-<UTC date>/
# and prints the table (bench/ort_table.py). Run it on a quiet machine: the foreign-load meter counts
# repetitions measured while other processes used the CPU ("busy reps"). The ORT exports are cached
# (HARNESS_CACHE_DIR/ort, else ~/.cache/harness/ort); a first build takes minutes per variant.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"     # this checkout's harness, whichever venv runs it
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
OUT_DIR=${OUT_DIR:-results/bench-ort-$(date -u +%Y%m%dT%H%M%SZ)}
rc=0
# llama.cpp (baseline = its F32 copy of the GGUF, and Q4_K_M) joins the same run where llama-cpp-python imports
if $PY -c "import llama_cpp" 2>/dev/null; then
  LLAMA=(--backends pytorch,ort,llama.cpp --variants baseline,int8-dq,int4-wo,q4_k_m
         --backend-variants llama.cpp=baseline,llama.cpp=q4_k_m,ort=baseline,ort=int8-dq,ort=int4-wo,pytorch=baseline,pytorch=int8-dq,pytorch=int4-wo)
else
  LLAMA=(--backends pytorch,ort --variants baseline,int8-dq,int4-wo)
fi
$PY -m harness.cli run --model smollm2-135m --device cpu "${LLAMA[@]}" --repetitions 3 --prompt-tokens 128 \
  --new-tokens 64 --out "$OUT_DIR" "$@" || rc=$?
$PY bench/ort_table.py "$OUT_DIR"
echo "run folder: $OUT_DIR (report.md has every figure)"
exit $rc
