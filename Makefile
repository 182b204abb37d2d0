# moe_edu — one command to learn (`make lab`), one to test (`make test`).
#
# TORCH: the torch requirement installed first. CI sets TORCH=torch==2.13.0 (the CPU
# build on its disk); on your machine the default takes pip's normal build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch>=2.5
PORT   ?= 8888
export PYTHONHASHSEED := 0

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

.PHONY: lab test test-lib test-notebooks test-browser notebooks check-notebooks install install-test bench bench-train explorer train clean help

help:
	@echo "make lab        create .venv, install, open JupyterLab on notebooks/"
	@echo "make test       install test dependencies and run the whole suite (library + nbval)"
	@echo "make notebooks  rebuild every .ipynb from its py:percent twin and execute it"
	@echo "make bench      run the dispatch benchmark (writes benchmarks/results)"
	@echo "make explorer   serve the routing explorer (notebook 06) with Voila"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[notebooks]"
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	@touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)  # containers often run as root

lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(PORT) $(ROOT_FLAG)

# tests/test_project.py also fails when a committed .ipynb is stale against its twin
test: install-test
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q $(NBVAL) notebooks

test-lib: install-test
	$(PY) -m pytest -q tests

test-notebooks: install-test
	$(PY) -m pytest -q $(NBVAL) notebooks

notebooks: install-test
	$(PY) tools/build_notebooks.py

check-notebooks: install-test
	$(PY) tools/build_notebooks.py --check

test-browser: install-test
	$(PY) -m pytest -q -m browser tests

bench: install-test
	$(PY) -m moe_edu.bench

bench-train: install-test
	$(PY) benchmarks/train_throughput.py --breakdown

train: install  # reproduces the shipped checkpoint (its README has the full command)
	$(PY) -m moe_edu.train --threads 1 --out moe_edu/checkpoints/tiny

explorer: install
	$(PIP) install -q -e ".[explorer]"
	$(VENV)/bin/voila notebooks/06_routing_explorer.ipynb --port=$(PORT) --no-browser

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
