"""The runnable examples in the docstrings of the code-RL and eval modules (the code reward's
example runs the real sandbox)."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["llmrl.eval.passk", "llmrl.eval.stats",
           pytest.param("llmrl.eval.benchmarks", marks=pytest.mark.requires_data("mbpp")),  # load_mbpp("test")
           "llmrl.rewards.code", "llmrl.data.code_tiny"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
