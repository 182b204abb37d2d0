# moe_edu — one command to learn (`make lab`), one to test (`make test`).
#
# Installs are locked: requirements/lock.txt pins every package (a universal lock: Linux, macOS
# and Windows, x86-64 and ARM, Python 3.10-3.13), so the committed notebook outputs are reproduced
# by the versions that made them. torch is pinned apart, in TORCH: CI takes torch 2.13.0's CPU
# build from its disk; on your machine pip takes its normal build of the same version.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
PORT   ?= 8888
# lab extensions the explorer page does not use and that fail to load under Voila's bundled JupyterLab,
# filling the console with errors: jupytext's, nbgrader's and the notebook app's
VOILA_EXTENSIONS := --VoilaConfiguration.extension_denylist='["jupyterlab-jupytext", "@jupyter/nbgrader", "@jupyter-notebook/lab-extension"]'
export PYTHONHASHSEED := 0
# npm's record of book/node_modules (the website's MathJax), once installed; the tests need it where npm exists
BOOK_NODE := book/node_modules/.package-lock.json
NPM_BOOK := $(if $(shell command -v npm),$(BOOK_NODE),)
BOOK_OUT ?= _build/book
# BOOK_FLAGS=--no-solutions: a site for a class, without the exercises' solution renders
BOOK_FLAGS ?=

NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider
# torch's CPU kernels on another instruction set (no ATen vectorisation, SSE4.1 oneDNN, MKL's
# compatible code path): what a student's laptop may run. The notebooks must print the same there.
OTHER_ISA := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE

.PHONY: book test-book lab test test-fast lint test-lib test-notebooks test-notebooks-other-isa test-browser notebooks check-notebooks install install-test lock bench bench-train explorer train passkey serving-results adapting-results clean help classroom classroom-grade classroom-feedback

help:  ## list every target
	@awk -F':.*## ' '/^[a-zA-Z_-]+:.*## / { printf "make %-26s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: $(PY) pyproject.toml requirements/lock.txt
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -r requirements/lock.txt
	$(PIP) install -q --no-deps -e .
	@touch $@

# one lock for the course and its tests: the test tools are already in it; the tests build the
# website too, which serves its own MathJax (npm's, pinned in book/package-lock.json; without npm the
# website's tests skip, or fail under CI)
$(VENV)/.installed-test: $(VENV)/.installed $(NPM_BOOK)
	@touch $@

$(BOOK_NODE): book/package.json book/package-lock.json
	npm ci --prefix book --no-audit --no-fund --loglevel=error
	@touch $@

install: $(VENV)/.installed  ## create .venv and install the locked course requirements
install-test: $(VENV)/.installed-test  ## the same (the lock holds the test tools too)

ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)  # containers often run as root

lab: install  ## create .venv, install, open JupyterLab on notebooks/
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks --port=$(PORT) $(ROOT_FLAG)

# tests/test_project.py also fails when a committed .ipynb is stale against its twin
test: lint  ## the whole suite, as CI runs it: lint, library tests, nbval, nbval on another instruction set
	$(PY) -m pytest -q tests
	@# the two nbval passes run side by side (each kernel uses one thread; CI has two cores)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-notebooks test-notebooks-other-isa

test-fast: install-test  ## the development loop: library tests without the slow and browser ones
	$(PY) -m pytest -q -m "not slow and not browser" tests

lint: install-test  ## ruff check and ruff format --check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test-notebooks-other-isa: install-test  ## nbval again with torch's CPU kernels on another instruction set
	$(OTHER_ISA) $(PY) -c "import torch; c = torch.backends.cpu.get_cpu_capability(); assert c == 'DEFAULT', c"
	$(OTHER_ISA) $(PY) -m pytest -q $(NBVAL) notebooks

lock:  ## re-resolve requirements/lock.txt from requirements/lock.in (needs uv)
	uv pip compile --universal --python-version 3.10 requirements/lock.in -o requirements/lock.txt --custom-compile-command "make lock"

test-lib: install-test  ## library tests only
	$(PY) -m pytest -q tests

test-notebooks: install-test  ## nbval over every committed notebook
	$(PY) -m pytest -q $(NBVAL) notebooks

notebooks: install-test  ## rebuild every .ipynb from its py:percent twin and execute it
	$(PY) tools/build_notebooks.py

book: install $(BOOK_NODE)  ## the course as a website in $(BOOK_OUT)/html, offline, from the committed notebooks
	$(PY) tools/build_book.py --out $(BOOK_OUT) $(BOOK_FLAGS)
	@echo "open $(BOOK_OUT)/html/index.html, or serve it: $(PY) -m http.server -d $(BOOK_OUT)/html $(PORT)"

test-book: install-test  ## only the website's tests (builds it, then reads every page in Chromium)
	$(PY) -m pytest -q tests/test_book.py

check-notebooks: install-test  ## fail if a committed .ipynb is stale against its twin (no execution)
	$(PY) tools/build_notebooks.py --check

test-browser: install-test  ## only the real-browser tests (JupyterLab in headless Chromium)
	$(PY) -m pytest -q -m browser tests

bench: install-test  ## the dispatch benchmark (writes benchmarks/results)
	$(PY) benchmarks/cpu_dispatch.py --overwrite

bench-train: install-test  ## training-step throughput against transformers
	$(PY) benchmarks/train_throughput.py --breakdown

train: install  ## retrain the shipped checkpoint (bit for bit on the same torch, threads and CPU family)
	$(PY) -m moe_edu.train --preset tiny --steps 300 --lr 5e-3 --aux-loss-coef 1.0 --eval-every 50 --threads 1 --seed 0 --out moe_edu/checkpoints/tiny --overwrite

adapting-results: install  ## regenerate notebook 12's precomputed results (about 2 min of CPU, 1 thread)
	$(PY) -m moe_edu.experiments.adapting --threads 1 --out moe_edu/results/adapting.json --overwrite

$(VENV)/.installed-explorer: $(VENV)/.installed  # Voila, once (the lock already holds it)
	$(PIP) install -q "voila>=0.5.13"
	@touch $@

passkey: install  ## retrain the shipped passkey model (notebook 11), ~1.5 min on an idle core
	$(PY) -m moe_edu.experiments.passkey --out moe_edu/checkpoints/passkey --overwrite

serving-results: install  ## recompute notebook 11's routing traces, cache and quantisation tables
	$(PY) -m moe_edu.experiments.serving --overwrite

explorer: $(VENV)/.installed-explorer  ## serve the routing explorer alone on a page (Voila)
	$(VENV)/bin/voila notebooks/apps/routing_explorer_app.ipynb --port=$(PORT) --no-browser $(VOILA_EXTENSIONS)

clean:  ## remove .venv, caches and the built website
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info _build book/node_modules

# --- classroom: an nbgrader course for the exercises (notebooks/exercises/README.md, "Running a class") ---
# COURSE is git-ignored in the repository (/classroom/); point it elsewhere with COURSE=/path. nbgrader needs Python >= 3.11.
COURSE ?= classroom
classroom: install  ## nbgrader course in $(COURSE): nbgrader_config.py, all 12 exercise assignments generated and released
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m moe_edu.course.classroom setup --course $(COURSE)

classroom-grade: install  ## collect + autograde every submission, then the integrity scan (zeroes tampered checker cells)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m moe_edu.course.classroom grade --course $(COURSE)

classroom-feedback: install  ## after manual grading in formgrader: release feedback, export $(COURSE)/grades.csv
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m moe_edu.course.classroom feedback --course $(COURSE)
