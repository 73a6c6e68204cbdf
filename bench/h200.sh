#!/usr/bin/env bash
# Runs on the lent H200 (the device tool): installs the carried wheels, then one stage per argument.
# Each stage's run folders go to $OUT/<stage>.tar.gz (records.jsonl, run.json, report.md; the tables
# and charts are views, re-rendered with `harness report`). Usage: bench/h200.sh tests engine variants
set -uo pipefail
export PYTHONUNBUFFERED=1
# caches inside the checkout (ignored by git): the device keeps ignored paths between calls while it stays
# warm, so a later call reuses compiled Triton/inductor kernels and the harness's measured choices
DC=$PWD/.devcache
export HARNESS_CACHE_DIR=$DC/harness TRITON_CACHE_DIR=$DC/triton TORCHINDUCTOR_CACHE_DIR=$DC/inductor
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
# every run ends before DEADLINE_S seconds after the call started (default 570: the device's 600 s per
# call), so the stage's pack step always runs and what was measured comes back
T_START=$(date +%s)
left_s() { echo $(( T_START + ${DEADLINE_S:-570} - $(date +%s) )); }
hr() {
  local name=$1; shift
  local left=$(left_s) t=${RUN_TIMEOUT_S:-0}
  if [ "$left" -lt 30 ]; then echo "skipped $name: ${left} s left before the call's deadline"; return; fi
  if [ "$t" -eq 0 ] || [ "$t" -gt "$left" ]; then t=$left; fi
  timeout $t $H run "$@" --out $RUNS/$name 2>&1 | tee "$OUT/$name.log" | grep -E "\]   (ok|failed|unsupported|does-not-fit)"
}
M8="--model synthetic:llama-3.1-8b --new-tokens 64 --prompt-tokens 128"
RUNS=/tmp/runs; mkdir -p $RUNS
# a bench/profile_step.py JSON on stdin -> its step figures (the keys named) and its kernel groups
profsum() { python3 -c "import json,sys; d=json.load(sys.stdin); print({k: d.get(k) for k in sys.argv[1:]}); print(json.dumps(d['groups'], indent=0))" "$@"; }
# bench/kernels_gpu.py at one preset's block (PRESET TAG KERNELS) -> $OUT/kernels-TAG.{json,log}, a summary printed
kblock() {
  local t=$(( $(left_s) - 10 )); if [ "${KERNELS_TIMEOUT_S:-300}" -lt "$t" ]; then t=${KERNELS_TIMEOUT_S:-300}; fi
  timeout $t python3 bench/kernels_gpu.py --model $1 --kernels "$3" \
    --m ${KERNELS_M:-1,2,4,8,16,32,64,128,256,512,1024,2048} --out $OUT/kernels-$2.json > $OUT/kernels-$2.log 2>&1
  grep -v -i warn $OUT/kernels-$2.log | grep -E "M= +(1|8|32|2048) |failed|shapes|gemlite" | head -60
}
pack() { tar -C $RUNS -czf "$OUT/$1.tar.gz" --exclude='*.parquet' --exclude='*.csv' --exclude='charts' --exclude='report.html' --exclude='.lock' $(ls $RUNS) && rm -rf $RUNS/*; }
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
    profile)
      # where the bf16 batch-1 step's time goes (CUPTI over the engine's own decode-graph replays)
      python3 bench/profile_step.py --batch 1 --out $OUT/profile-bf16-b1.json | tail -60
      python3 bench/profile_step.py --batch 1 --variant int4-wo --out $OUT/profile-int4-b1.json | head -30 ;;
    kernels)
      timeout ${KERNELS_TIMEOUT_S:-240} python3 bench/kernels_gpu.py --out $OUT/kernels.json > $OUT/kernels.log 2>&1
      grep -v -i warn $OUT/kernels.log | tail -90 ;;
    diag)
      # qwen2.5-7b int4 batch 32 prompt 2048 (a CUDA illegal memory access before): with launch blocking,
      # so the failing kernel is the one named
      CUDA_LAUNCH_BLOCKING=1 hr qwen-int4-b32-p2048 --model synthetic:qwen2.5-7b --variants int4-wo --batch 32 \
        --prompt-tokens 2048 --new-tokens 16 --tune off
      grep -iE "error|illegal|Traceback" -A3 $OUT/qwen-int4-b32-p2048.log | head -30
      hr mistral-bf16-b1 --model synthetic:mistral-7b --variants baseline --batch 1 --new-tokens 64 --tune off
      pack diag ;;
    kernels70)
      # kernel timings at the 70B block's shapes, M = 1..256 and a prefill size (planner curves for 70B)
      kblock llama-3.1-70b 70b "bf16,int4,fp8" ;;
    kernels8)
      # the 8B block at every M the 70B one has (its 2026-12-01 log has M = 1, 8, 32, 2048 only)
      kblock llama-3.1-8b 8b "${KERNELS:-bf16,int4,fp8,w4a8,dequantized}" ;;
    calibrate)
      # the whole kernel-curve calibration (kernel timings per block, step and prefill profiles), in pieces
      # over several calls: the work folder comes back as calwork.tar.gz; unpack it here into
      # .devcache/calwork and carry that path to the next call, which measures only what is missing
      W=.devcache/calwork; mkdir -p $W
      $H calibrate --kernels --kernel-blocks ${KBLOCKS:-llama-3.1-8b,llama-3.1-70b} --work-dir $W \
        --stop-after-s $(( $(left_s) - 30 )) --out $W/h200-kernels.json 2>&1 | tail -20
      tar -C .devcache -czf $OUT/calwork.tar.gz calwork ;;
    gputests-kernels)
      timeout 150 python3 -m pytest -q -m gpu --benchmark-disable -p no:cacheprovider tests/test_gpu_kernels.py 2>&1 \
        | tee "$OUT/gpu-tests-kernels.log" | tail -8 ;;
    axis)
      # the kernel axis: int4-wo and fp8-wo choose their kernel by measurement (variant_notes has every time)
      hr axis-8b $M8 --variants baseline,int4-wo,fp8-wo --batch 1,8 --tune off --energy-window-s 2
      RUN_TIMEOUT_S=110 hr qwen-int4-b32-p2048 --model synthetic:qwen2.5-7b --variants int4-wo[tinygemm] --batch 32 \
        --prompt-tokens 2048 --new-tokens 16 --tune off
      cp $HARNESS_CACHE_DIR/kernel_choices.json $OUT/ 2>/dev/null
      pack axis ;;
    fp8)
      # fp8 weight-only on its measured kernel (GemLite reads the fp8 bytes) against bf16 in the same run
      RUN_TIMEOUT_S=${FP8_TIMEOUT_S:-270} hr fp8-8b $M8 --variants baseline,fp8-wo --batch 1,8 --tune off --energy-window-s 2
      pack fp8 ;;
    big70)
      # 70B int4 on one card: built and quantized layer by layer (bf16 would need 141 GB)
      RUN_TIMEOUT_S=${BIG_TIMEOUT_S:-280} hr llama70b-int4 --model synthetic:llama-3.1-70b --variants int4-wo --batch 1,8 \
        --new-tokens 32 --prompt-tokens 128 --tune off --energy-window-s 2
      pack big70 ;;
    big70x)
      RUN_TIMEOUT_S=${BIG_TIMEOUT_S:-390} hr llama70b-int4-tinygemm --model synthetic:llama-3.1-70b --variants int4-wo[tinygemm] \
        --batch ${BIG_BATCH:-1} --new-tokens 32 --prompt-tokens 128 --tune off --energy-window-s 2 --min-seconds 1
      pack big70x ;;
    fp8x)
      RUN_TIMEOUT_S=${FP8_TIMEOUT_S:-170} hr fp8-gemlite-8b $M8 --variants fp8-wo[gemlite] --batch 1,8 --tune off \
        --energy-window-s 2 --min-seconds 1
      pack fp8x ;;
    split)
      # the per-phase GemLite path (dequantized prefill) and the per-batch kernel choice: GPU tests, then cells
      timeout 150 python3 -m pytest -q -m gpu --benchmark-disable -p no:cacheprovider tests/test_gpu_kernels.py 2>&1 \
        | tee "$OUT/gpu-tests-kernels.log" | tail -6
      RUN_TIMEOUT_S=${SPLIT_TIMEOUT_S:-250} hr p2048-8b --model synthetic:llama-3.1-8b --variants baseline,int4-wo[gemlite] \
        --batch 1 --prompt-tokens 2048 --new-tokens 32 --tune off --energy-window-s 2 --min-seconds 1
      pack split-p2048
      RUN_TIMEOUT_S=${B8_TIMEOUT_S:-150} hr gemlite-b8 $M8 --variants int4-wo[gemlite] --batch 8 --tune off \
        --energy-window-s 2 --min-seconds 1
      pack split-b8 ;;
    flexprof)
      # the bf16 batch-1 step with FlexAttention's decoding kernel in place of SDPA (kernels grouped as in `profile`)
      timeout 120 python3 bench/profile_step.py --batch 1 --decode-attention flex --out $OUT/profile-bf16-b1-flex.json \
        | profsum step_wall_ms_cuda_events kernels_per_step idle_between_kernels_per_step_ms ;;
    prefillprof)
      # where a bf16 prefill's time goes at prompt 128 and 2048 (the non-GEMM share a kernel-curve prefill
      # projection needs: harness/plan has none yet)
      for p in 128 2048; do
        timeout 150 python3 bench/profile_step.py --phase prefill --batch 1 --prompt $p --new 2 --steps 10 \
          --out $OUT/profile-bf16-prefill-p$p.json \
          | profsum prompt prefill_in_graph step_wall_ms_cuda_events kernels_per_step idle_between_kernels_per_step_ms
      done ;;
    engine4)
      # three processes with --tune auto: candidates untuned, tuned and flex measured in the first, cached after
      for i in 1 2 3; do RUN_TIMEOUT_S=150 hr bf16-b1-auto-$i $M8 --variants baseline --batch 1 --energy-window-s 3; done
      RUN_TIMEOUT_S=150 hr mistral-bf16-b1-auto --model synthetic:mistral-7b --variants baseline --batch 1 \
        --new-tokens 64 --prompt-tokens 128 --energy-window-s 3
      cp $HARNESS_CACHE_DIR/compile_choices.json $OUT/ 2>/dev/null
      pack engine4 ;;
    qwen)
      RUN_TIMEOUT_S=${QWEN_TIMEOUT_S:-150} hr qwen-int4-b32-p2048 --model synthetic:qwen2.5-7b --variants ${QWEN_VARIANT:-int4-wo[tinygemm]} \
        --batch 32 --prompt-tokens 2048 --new-tokens 16 --tune off --energy-window-s 2 --min-seconds 1
      pack qwen ;;
    cells)
      # the default per-format variants (kernel chosen by measurement at each batch's M) beside bf16, same run
      RUN_TIMEOUT_S=${CELLS_TIMEOUT_S:-540} hr cells-8b-b${CELLS_BATCH:-1} $M8 --variants baseline,int4-wo,fp8-wo \
        --batch ${CELLS_BATCH:-1} --tune off --energy-window-s 2 --min-seconds 1
      cp $HARNESS_CACHE_DIR/kernel_choices.json $OUT/kernel_choices-b${CELLS_BATCH:-1}.json 2>/dev/null
      pack cells-b${CELLS_BATCH:-1} ;;
    big70b8)
      RUN_TIMEOUT_S=${BIG_TIMEOUT_S:-330} hr llama70b-int4-b8 --model synthetic:llama-3.1-70b --variants int4-wo \
        --batch 8 --new-tokens 32 --prompt-tokens 128 --tune off --energy-window-s 2 --min-seconds 1
      pack big70b8 ;;
    gputests)
      # -v: a run cut by the deadline still names each test it finished; GPUTESTS_S caps it below the time left
      t=$(( $(left_s) - 5 )); if [ -n "${GPUTESTS_S:-}" ] && [ "$GPUTESTS_S" -lt "$t" ]; then t=$GPUTESTS_S; fi
      timeout $t python3 -m pytest -v -rfE --tb=short -m gpu --benchmark-disable -p no:cacheprovider --durations=0 \
        ${TESTS:-tests} > "$OUT/gpu-tests.log" 2>&1; grep -E "PASSED|FAILED|SKIPPED|ERROR|passed|failed" "$OUT/gpu-tests.log" \
        | tail -40 ;;
    gqaprof)
      # decode attention with the query heads of each KV group packed into query rows (lean "sdpa-packed")
      # against SDPA with enable_gqa, same process order; PROFS: "model variant batch prompt attention;..."
      IFS=';' read -ra specs <<< "${PROFS:-qwen2.5-7b baseline 32 2048 sdpa;qwen2.5-7b baseline 32 2048 sdpa-packed}"
      for spec in "${specs[@]}"; do
        set -- $spec; t=$(( $(left_s) - 10 )); [ "$t" -gt ${PROF_TIMEOUT_S:-150} ] && t=${PROF_TIMEOUT_S:-150}
        [ "$t" -lt 30 ] && { echo "skipped $spec"; continue; }
        echo "== $spec"
        # no brackets in the file name: the device tool does not bring such names back
        v=$(echo "$2" | tr '[]' '--' | sed 's/-$//')
        timeout $t python3 bench/profile_step.py --model synthetic:$1 --variant $2 --batch $3 --prompt $4 \
          --new ${PROF_NEW:-16} --steps 10 --decode-attention $5 --out "$OUT/profile-$1-$v-b$3-p$4-$5.json" \
          | profsum step_wall_ms_cuda_events kernels_per_step idle_between_kernels_per_step_ms
      done ;;
    cells1)
      # bf16 and int4 tinygemm at batch 1 with the current engine (compiled prefill): for a board whose
      # committed records predate it (the H100's ran the eager prefill)
      RUN_TIMEOUT_S=${CELLS_TIMEOUT_S:-200} hr cells1-8b $M8 --variants baseline,int4-wo[tinygemm] --batch 1 --tune off \
        --energy-window-s 2 --min-seconds 1
      pack cells1 ;;
    power)
      # power and clock of sustained kernel loads and the clock's recovery after a capped one (the planner's
      # power file: harness calibrate --power-from); POWER_MODEL picks the block, POWER_ARGS adds options
      timeout $(( $(left_s) - 10 )) python3 bench/power_gpu.py --model ${POWER_MODEL:-llama-3.1-8b} ${POWER_ARGS:-} \
        --out $OUT/power-${POWER_MODEL:-llama-3.1-8b}.json 2>&1 | grep -v -i warn | tail -20 ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "stage $stage: $(( $(date +%s) - t0 )) s"
done
ls -la "$OUT"
