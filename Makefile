# Two commands set everything up on a fresh machine:
#   make train   creates .venv if missing, installs requirements.txt and the project itself
#                (pip install -e ., so the midpg-* commands exist), trains MI-DPG on the
#                built-in synthetic dataset and prints the per-scenario table
#   make test    same environment, runs the whole test suite (what CI runs; the environment
#                includes requirements-bench.txt: torch, for the PyTorch parity tests and
#                benchmarks/speed)
#   make test-fast  the tests not marked slow or torch (pyproject.toml): under 3 minutes
# ARGS adds flags to train/eval, e.g. make train ARGS=--config.train.num_epochs=2
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
CONFIG ?= configs/default.py
ARGS ?=

.PHONY: train test test-fast eval clean compile-env

# midpg-compile for TPU slices and NVIDIA GPUs that are not attached (compile-only libtpu and the
# JAX CUDA plugin, ~1 GB): a venv of its own, outside `make test`'s set.
COMPILE_VENV ?= .venv-compile
compile-env: $(COMPILE_VENV)/.installed
$(COMPILE_VENV)/.installed: requirements.txt pyproject.toml
	test -x $(COMPILE_VENV)/bin/python || $(PYTHON) -m venv $(COMPILE_VENV)
	$(COMPILE_VENV)/bin/python -m pip install -q --upgrade pip
	$(COMPILE_VENV)/bin/python -m pip install -q -r requirements.txt
	$(COMPILE_VENV)/bin/python -m pip install -q -e '.[tpu,cuda]'
	touch $@

$(VENV)/.installed: requirements.txt requirements-bench.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

train: $(VENV)/.installed
	$(PY) train.py --config $(CONFIG) --workdir $(WORKDIR) $(ARGS)

eval: $(VENV)/.installed
	$(PY) eval.py --config $(CONFIG) --workdir $(WORKDIR) $(ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q tests -m 'not slow and not torch'

clean:
	rm -rf runs
