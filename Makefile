# The README's two commands: `make demo` (main job: the forecasting quickstart) and `make test` (test suite).
# Both create .venv on first use with the CPU build of PyTorch; override TORCH to change that,
# e.g. `make test TORCH='torch>=2.10'` on a machine with a CUDA toolkit.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
READY := $(VENV)/.installed
#: the TORCH the venv was set up with; rewritten when it changes, which sets the venv up again
TORCH_SPEC := $(VENV)/.torch

.PHONY: demo parity test lint bench FORCE

$(TORCH_SPEC): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH)' | cmp -s - $@ || echo '$(TORCH)' > $@

$(READY): pyproject.toml $(TORCH_SPEC)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e '.[dev,triton,lm,hf,forecast,world,bench]'
	touch $@

demo: $(READY)
	$(BIN)/pararnn-ts fit -c experiments/forecast/quickstart.yaml

parity: $(READY)
	$(BIN)/pararnn-ts fit -c experiments/synthetic/parity_paragru.yaml

lint: $(READY)
	$(BIN)/ruff check pararnn_ts tests experiments datasets

test: lint
	$(BIN)/pytest -q

bench: $(READY)
	$(BIN)/python experiments/bench/solver_bench.py --overwrite  # runs/bench/, replaced on every make bench
	$(BIN)/python experiments/bench/kernel_bench.py --overwrite
