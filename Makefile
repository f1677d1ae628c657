# mergebench-kit: the two entry points of a fresh machine are `make reproduce` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 is the CPU wheel this kind of machine carries on disk; override on a GPU host.
TORCH_SPEC ?= torch==2.13.0
MODEL ?= tiny

.PHONY: venv test lint bench reproduce clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[local,dev]"
	@touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check .

reproduce: venv
	$(VENV)/bin/mergebench reproduce --model $(MODEL)

bench: venv
	$(PY) benchmarks/merge_speed.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
