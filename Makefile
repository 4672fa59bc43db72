# The README's two commands: `make demo` (main job: the forecasting quickstart) and `make test` (test suite).
# Both create .venv on first use with PyTorch 2.13: the CPU build where pip's indexes give it (CI's machines have it
# locally), else PyPI's, which on Linux is the CUDA build: `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# adds the index of the CPU wheels. Override TORCH to change the version, e.g. `make test TORCH='torch>=2.10'`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_PIP := $(strip $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) '$(TORCH)')
BIN := $(VENV)/bin
READY := $(VENV)/.installed
#: the TORCH (and index) the venv was set up with; rewritten when it changes, which sets the venv up again
TORCH_SPEC := $(VENV)/.torch

.PHONY: demo parity test lint bench floors FORCE

$(TORCH_SPEC): FORCE
	@mkdir -p $(VENV)
	@echo '$(strip $(TORCH_INDEX) $(TORCH))' | cmp -s - $@ || echo '$(strip $(TORCH_INDEX) $(TORCH))' > $@

$(READY): pyproject.toml $(TORCH_SPEC)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(if $(filter $(TORCH_SPEC),$?),$(BIN)/pip uninstall -q -y torch 2>/dev/null || true)  # another TORCH: not kept
	$(BIN)/pip install -q $(TORCH_PIP)
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

# The lowest versions pyproject.toml allows of Lightning, jsonargparse, torchmetrics and GluonTS (tests/floors.txt),
# in a venv of their own, under the tests that use them most (CI runs this after `make test`).
FLOORS_VENV ?= .venv-floors
FLOOR_TESTS := tests/test_cli.py tests/test_cli_resume.py tests/test_forecast_cli.py tests/test_forecast_estimator.py \
	tests/test_custom_cells_in_models.py tests/test_lm_module.py tests/test_world_data.py tests/test_install_errors.py
floors:
	rm -rf $(FLOORS_VENV)
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/pip install -q --upgrade pip
	$(FLOORS_VENV)/bin/pip install -q $(TORCH_PIP)
	$(FLOORS_VENV)/bin/pip install -q -c tests/floors.txt -e '.[dev,lm,forecast,world]'
	$(FLOORS_VENV)/bin/pip list 2>/dev/null | grep -iE '^(lightning|jsonargparse|torchmetrics|gluonts) '
	$(FLOORS_VENV)/bin/pytest -q -p no:cacheprovider $(FLOOR_TESTS)
