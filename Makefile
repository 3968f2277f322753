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
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

# Re-runs only when an input of the install changes: a second `make install` takes seconds.
$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt requirements/constraints.txt \
          tools/build_mmcv.sh $(wildcard mmmv/ops/csrc/*.cpp mmmv/ops/csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) setuptools wheel ninja
	$(PIP) torch torchvision
	wheel=$$(bash tools/build_mmcv.sh $(PY) | tail -n 1) && $(PIP) "$$wheel"
	$(PIP) --no-build-isolation -e ".[tests]"
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

clean:
	rm -rf $(VENV) build *.egg-info mmmv/ops/*.so work_dirs
