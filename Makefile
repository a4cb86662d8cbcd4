# Two commands set everything up on a fresh machine:
#   make train   creates .venv if missing, installs requirements.txt and the project itself
#                (pip install -e ., so the midpg-* commands exist), trains MI-DPG on the
#                built-in synthetic dataset and prints the per-scenario table
#   make test    same environment, runs the test suite (the environment includes
#                requirements-bench.txt: torch, for the PyTorch parity tests and midpg_jax.speed)
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
CONFIG ?= configs/default.py

.PHONY: train test eval clean compile-env

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
	$(PY) train.py --config $(CONFIG) --workdir $(WORKDIR)

eval: $(VENV)/.installed
	$(PY) eval.py --config $(CONFIG) --workdir $(WORKDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

clean:
	rm -rf runs
