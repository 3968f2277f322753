# One-command set-up: `make demo` (main job on the built-in demo data) and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c requirements/constraints.txt
STAMP := $(VENV)/.mmmv-installed
# pytest arguments, e.g. `make test PYTEST_ARGS='-m "not slow"'`
PYTEST_ARGS ?=
# mamba-ssm's CUDA scan, installed where a GPU is visible (it compiles CUDA kernels, which can
# take tens of minutes); MAMBA=0 skips it (the PyTorch scan runs instead, slower)
MAMBA ?= auto
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install test test-fast demo bench env clean

install: $(STAMP)

# Re-runs only when an input of the install changes: a second `make install` takes seconds.
$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt requirements/deploy.txt \
          requirements/constraints.txt \
          requirements/cuda.txt tools/build_mmcv.sh tools/mmcv_wheel_slot.py \
          $(wildcard mmmv/ops/csrc/*.cpp mmmv/ops/csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) setuptools wheel ninja
	$(PIP) torch torchvision
	wheel=$$(bash tools/build_mmcv.sh $(PY) | tail -n 1) && $(PIP) "$$wheel"
	$(PIP) --no-build-isolation -e ".[tests,deploy]"
	if [ "$(MAMBA)" != 0 ] && $(PY) -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; \
	then $(PIP) --no-build-isolation -e ".[cuda]"; fi
	# the editable install does not compile extensions: build the C++ kernels in place
	$(PY) setup.py -q build_ext --inplace
	touch $@

test: install
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

demo: install
	$(PY) tools/demo.py

bench: install
	$(PY) benchmarks/scan.py

# versions, mmcv's CUDA ops, backends, CPU instruction sets and known traps (tools/check_env.py)
env: install
	$(PY) tools/check_env.py

clean:
	rm -rf $(VENV) build *.egg-info mmmv/ops/*.so work_dirs
