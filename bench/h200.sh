#!/usr/bin/env bash
# Runs on the lent H200 (the device tool): installs the carried wheels, then one stage per argument.
# Each stage's run folders go to $OUT/<stage>.tar.gz (records.jsonl, run.json, report.md; the tables
# and charts are views, re-rendered with `harness report`). Usage: bench/h200.sh tests engine variants
set -uo pipefail
export PYTHONUNBUFFERED=1 HARNESS_CACHE_DIR=/tmp/harness-cache
# NVLink multicast stays off in every process (KINDS.md: it can take the host's GPUs out of service)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "import torchao; print('torchao', torchao.__version__)" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"
python3 -c "import mslk; print('mslk', getattr(mslk, '__version__', '?'))" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"
H="python3 -m harness.cli"
# print each cell's status line (the run's stderr) and keep the whole log
hr() { local name=$1; shift; timeout ${RUN_TIMEOUT_S:-0} $H run "$@" --out $RUNS/$name 2>&1 | tee "$OUT/$name.log" | grep -E "\]   (ok|failed|unsupported|does-not-fit)" ; }
M8="--model synthetic:llama-3.1-8b --new-tokens 64 --prompt-tokens 128"
RUNS=/tmp/runs; mkdir -p $RUNS
pack() { tar -C $RUNS -czf "$OUT/$1.tar.gz" --exclude='*.parquet' --exclude='*.csv' --exclude='charts' $(ls $RUNS) && rm -rf $RUNS/*; }
for stage in "$@"; do
  t0=$(date +%s)
  case $stage in
    tests)
      python3 -m pytest -q -x -m gpu --benchmark-disable -p no:cacheprovider tests 2>&1 | tee "$OUT/gpu-tests.log" | tail -25 ;;
    engine)
      # three processes, --tune auto (chosen by measurement, then cached), then untuned for reference
      for i in 1 2 3; do hr bf16-b1-auto-$i $M8 --variants baseline --batch 1; done
      hr bf16-b1-off $M8 --variants baseline --batch 1 --tune off
      cat $HARNESS_CACHE_DIR/compile_choices.json 2>/dev/null | head -20
      pack engine ;;
    variants)
      hr w4a8 $M8 --variants baseline,w4a8 --batch 1,8,32 --tune off --energy-window-s 3
      pack variants ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "stage $stage: $(( $(date +%s) - t0 )) s"
done
ls -la "$OUT"
