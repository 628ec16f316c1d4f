# The README's two commands: `make demo` (set up + tour) and `make test` (set up + suite).
VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2

.PHONY: demo test install clean lint

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# A bare `torch` requirement would pull a multi-GB CUDA build: install the CPU torch first,
	@# unless the venv already has a torch, and pin whatever torch is there for the rest.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > $(VENV)/constraints.txt
	$(PY) -m pip install -q -c $(VENV)/constraints.txt -e ".[all,dev]"
	@touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/hf-ext tour

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check hf_ext tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build dist *.egg-info runs
