# snnrun — `make help` lists the targets.
#   make train                 set up .venv (first time) and run `snnrun train`
#   make test                  set up .venv (first time) and run the fast tests
# Data: $SNNRUN_DATA if set, else ../shared/data when it exists, else downloads into data/.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SNNRUN := $(VENV)/bin/snnrun
STAMP := $(VENV)/.installed
ARGS ?=

ifeq ($(origin SNNRUN_DATA),undefined)
  ifneq ($(wildcard ../shared/data),)
    export SNNRUN_DATA := $(abspath ../shared/data)
  endif
endif
# Keep big tensor buffers in the heap (design.md §7); snnrun also sets this itself.
export MALLOC_MMAP_MAX_ ?= 0
export MALLOC_TRIM_THRESHOLD_ ?= 1099511627776

.PHONY: help install train test test-slow test-gpu test-all lint format bench peers sweep mlflow-ui clean

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel; an unpinned torch pulls multi-GB CUDA wheels
	$(PY) -m pip install --quiet torch==2.13.0
	# dev tools and the sweep plugins (Optuna sweeper, joblib and submitit launchers)
	$(PY) -m pip install --quiet -e '.[dev,sweep,export]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install snnrun (editable), dev tools, sweep plugins

train: $(STAMP)  ## run `snnrun train $(ARGS)` (default: MNIST MLP, tracked in MLflow)
	$(SNNRUN) train $(ARGS)

test: $(STAMP)  ## fast tests (not slow, no GPU), a few minutes on 2 cores
	$(PY) -m pytest -m "not slow and not gpu" -q $(ARGS)

test-slow: $(STAMP)  ## only the slow tests (subprocess CLI runs, longer training)
	$(PY) -m pytest -m "slow and not gpu" -q $(ARGS)

test-gpu: $(STAMP)  ## the CUDA tests (need a GPU; benchmarks/gpu.sh runs them there)
	$(PY) -m pytest -m gpu -q $(ARGS)

test-all: $(STAMP)  ## every test but the CUDA ones
	$(PY) -m pytest -m "not gpu" -q $(ARGS)

lint: $(STAMP)  ## ruff check + format check
	$(VENV)/bin/ruff check snnrun tests benchmarks
	$(VENV)/bin/ruff format --check snnrun tests benchmarks

format: $(STAMP)  ## ruff format + autofix
	$(VENV)/bin/ruff format snnrun tests benchmarks
	$(VENV)/bin/ruff check --fix snnrun tests benchmarks

bench: $(STAMP)  ## snnrun vs the peers, same math (benchmarks/results/bench.md)
	$(SNNRUN) bench $(ARGS)

peers: $(STAMP)  ## install snnTorch, SpikingJelly, Norse for `snnrun bench` (--no-deps)
	# --no-deps: their declared deps pull torchvision/torchaudio, which replace the CPU torch
	$(PY) -m pip install --quiet --no-deps snntorch==1.0.0 spikingjelly==2.0.0 norse==1.1.0 nir==1.0.8 nirtorch==2.6
	$(PY) -m pip install --quiet loguru h5py

sweep: $(STAMP)  ## example sweep: decay x seed on a short MNIST run
	$(SNNRUN) train -m stbp.decay=0.1,0.2,0.3 seed=0,1 trainer.epochs=1 $(ARGS)

# snnrun writes ./outputs under the folder it runs in; make runs it here, so CURDIR.
mlflow-ui: $(STAMP)  ## browse runs: MLflow UI, http://127.0.0.1:5000/#/?workflowType=machine_learning
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/outputs/mlflow.db \
	  --default-artifact-root file://$(CURDIR)/outputs/mlartifacts --host 127.0.0.1 --port 5000

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .ruff_cache $$(find . -name __pycache__ -not -path './$(VENV)/*')
