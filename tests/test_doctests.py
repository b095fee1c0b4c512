"""The examples in core docstrings run and stay true."""
import doctest
import importlib

import pytest

MODULES = [
    "llmrl.algorithms.advantages",
    "llmrl.algorithms.losses",
    "llmrl.config.load",
    "llmrl.rollout.hf_engine",
    "llmrl.trainer.forward",
    "llmrl.rewards.types",
    "llmrl.rewards.math",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
