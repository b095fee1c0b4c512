"""Shared test setup: the ``requires_data`` marker.

``@pytest.mark.requires_data("gsm8k", ...)`` marks a test that reads a benchmark's local copy
(``llmrl.paths.BENCHMARK_FILES``, found by ``llmrl.paths.find_local_data``: $LLMRL_DATA_DIR,
../shared/data, the llmrl cache). Tests never download. When a data set is missing the test is
skipped with one reason naming the data set, the places looked and the fix; with
``LLMRL_REQUIRE_DATA=1`` (set by .ci/run) a missing data set is a test error instead."""
from __future__ import annotations

import os

import pytest

from llmrl.paths import BENCHMARK_FILES, find_local_data, missing_data_message

REQUIRE_ENV = "LLMRL_REQUIRE_DATA"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires_data(*names): reads these benchmarks' local copies (gsm8k, mbpp, apps, humaneval); "
                   f"skipped when absent, an error when ${REQUIRE_ENV}=1")


def missing_data(names) -> str | None:
    """None when every file of every named data set has a local copy, else why not."""
    for name in names:
        if name not in BENCHMARK_FILES:
            raise pytest.UsageError(f"requires_data({name!r}): unknown data set; use one of {sorted(BENCHMARK_FILES)}")
        for rel in BENCHMARK_FILES[name]:
            if find_local_data(rel) is None:
                msg = missing_data_message(rel, what=f"data set {name!r}")
                return msg.replace(":\n  - ", ": ").replace("\n  - ", "; ").replace("\n", ". ")
    return None


def pytest_runtest_setup(item):
    names = [n for m in item.iter_markers("requires_data") for n in m.args]
    if not names:
        return
    why = missing_data(names)
    if why is None:
        return
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{why} (${REQUIRE_ENV}=1: a missing data set is an error)", pytrace=False)
    pytest.skip(f"{why} (set ${REQUIRE_ENV}=1 to make this an error)")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for the module's tests: tiny tensors gain nothing from more, and on a
    shared 2-core machine contending threads turn a 0.1 s case into 2 s. Also deterministic."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
