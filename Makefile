# Two entry points a fresh machine needs: `make demo` and `make test`. Both create .venv and
# install everything first. torch is installed first, pinned to the CPU wheel, so that the
# project's `torch>=2.4` range installs nothing more (a bare `pip install torch` pulls CUDA).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-all bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/llmrl demo --overwrite  # replaces the previous demo run in runs/demo

test: install
	$(BIN)/python -m pytest -m "not slow"

test-all: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache
