# The README's commands: `make demo` (set up + tour), `make test` (set up + every test tier, as CI runs them),
# `make check` (the quick tests, ≤ 4 min). Tiers and budgets: TESTING.md, .ci/tiers.py.
VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
# Installs are reproducible: against the pins of a full passing environment. `make install CONSTRAINTS=` for
# the newest releases instead (what `.ci/tiers.py --only newest` tests every run).
CONSTRAINTS ?= constraints/known-good.txt
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2
TIERS_ARGS ?=
CHECK_EXPR := not (slow or real or multiprocess or conformance)

.PHONY: demo test check doctest install clean lint tiers known-good

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# A bare `torch` requirement would pull a multi-GB CUDA build: install the CPU torch first,
	@# unless the venv already has a torch, and pin whatever torch is there for the rest.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > $(VENV)/constraints.txt
	@$(if $(CONSTRAINTS),grep -v '^torch==' $(CONSTRAINTS) >> $(VENV)/constraints.txt,true)
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[all,dev]"
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/hf-ext tour

# Every tier .ci/run runs (core, conformance, real, multiprocess, cli, docs, newest, oldest), each timed.
test: install
	$(PYTHON) .ci/tiers.py --venv $(VENV) $(TIERS_ARGS)

# The quick tests: everything not marked slow/real/multiprocess/conformance.
check: install
	$(PY) -m pytest $(PYTEST_ARGS) -m "$(CHECK_EXPR)"

# Docstring examples alone (they also run in the docs tier of `make test`; see TESTING.md).
doctest: install
	$(PY) -m pytest -n 0 --doctest-modules hf_ext -p no:cacheprovider

tiers:
	@$(PYTHON) .ci/tiers.py --table

lint: install
	$(VENV)/bin/ruff check hf_ext tests benchmarks
	$(VENV)/bin/lint-imports

# Refresh constraints/known-good.txt from this venv (after a green `make test`).
known-good: install
	@{ sed -n '1,3p' constraints/known-good.txt; $(PY) -m pip freeze --all | grep -v '^#' | grep '==' | grep -v '^pip==' \
	  | sed -E 's/^torch==([^+]*)\+.*/torch==\1/'; } > constraints/known-good.txt.new
	mv constraints/known-good.txt.new constraints/known-good.txt

clean:
	rm -rf $(VENV) .ci-venv .ci-newest .ci-oldest build dist *.egg-info runs
