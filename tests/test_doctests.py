"""Every docstring example in the package runs and stays true. Modules are discovered, not
listed, so a new module's examples are tested from the day they are written (the code reward's
examples run the real sandbox)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

ROOTS = ["llmrl", "llmrl.rewards", "llmrl.sandbox", "llmrl.eval"]   # the last three: package-dir mapped
# Programs that run inside the sandbox as scripts (they import their siblings top-level).
SANDBOX_SCRIPTS = {"llmrl.sandbox._judge", "llmrl.sandbox._worker"}
NEEDS_DATA = {"llmrl.eval.benchmarks": "mbpp"}   # load_mbpp("test") in an example


def _modules() -> list[str]:
    names: set[str] = set()
    for root in ROOTS:
        pkg = importlib.import_module(root)
        names |= {m.name for m in pkgutil.walk_packages(pkg.__path__, root + ".")}
    return sorted(names - SANDBOX_SCRIPTS)


def _with_examples():
    for name in _modules():
        mod = importlib.import_module(name)  # an import error here is a defect: fail collection
        if any(t.examples for t in doctest.DocTestFinder().find(mod)):
            marks = [pytest.mark.requires_data(NEEDS_DATA[name])] if name in NEEDS_DATA else []
            yield pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", list(_with_examples()))
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_discovery_sees_the_mapped_packages():
    found = _modules()
    for expected in ("llmrl.trainer.step", "llmrl.rewards.runner", "llmrl.sandbox.verdict", "llmrl.eval.passk"):
        assert expected in found
