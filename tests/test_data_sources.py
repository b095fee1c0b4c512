"""Where benchmark data comes from (llmrl.paths.find_local_data and source="auto"), and the
``requires_data`` marker of tests/conftest.py: a fresh clone without the data skips the tests
that need it with one reason, and with LLMRL_REQUIRE_DATA=1 (CI) it is an error instead.
Every file used here is a small fixture written into tmp_path."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

import llmrl.paths as paths
from llmrl.data.gsm8k import gsm8k_dataset
from llmrl.eval.benchmarks import load_humaneval, load_mbpp
from llmrl.paths import DataNotFoundError, find_local_data

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parent.parent


def _gsm8k(root: Path, question: str) -> Path:
    (root / "gsm8k").mkdir(parents=True, exist_ok=True)
    (root / "gsm8k" / "test.jsonl").write_text(json.dumps({"question": question, "answer": "x\n#### 1,234"}) + "\n")
    return root


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """Three empty data roots wired as $LLMRL_DATA_DIR, the shared folder and the cache."""
    env, shared, cache = tmp_path / "env", tmp_path / "shared", tmp_path / "cache"
    monkeypatch.setenv("LLMRL_DATA_DIR", str(env))
    monkeypatch.setattr(paths, "SHARED_DATA_DIR", shared)
    monkeypatch.setenv("LLMRL_CACHE_DIR", str(cache))
    return env, shared, cache / "data"


@pytest.fixture
def hub(monkeypatch):
    """datasets.load_dataset replaced: records its calls, returns what ``hub.rows`` holds, or
    raises ``hub.error`` (no test here touches the network)."""
    import datasets

    class Hub:
        calls: list = []
        rows = None
        error: Exception | None = None

        def __call__(self, *args, **kwargs):
            self.calls.append((args, kwargs))
            if self.error is not None:
                raise self.error
            return self.rows

    h = Hub()
    h.calls = []
    monkeypatch.setattr(datasets, "load_dataset", h)
    return h


def test_auto_lookup_order_env_then_shared_then_cache_then_hub(roots, hub):
    env, shared, cache = roots
    for root, q in ((env, "from env"), (shared, "from shared"), (cache, "from cache")):
        _gsm8k(root, q)
    assert find_local_data("gsm8k/test.jsonl") == env / "gsm8k" / "test.jsonl"
    assert gsm8k_dataset("test")["question"] == ["from env"]
    (env / "gsm8k" / "test.jsonl").unlink()
    assert gsm8k_dataset("test")["question"] == ["from shared"]
    (shared / "gsm8k" / "test.jsonl").unlink()
    assert gsm8k_dataset("test", source="local")["question"] == ["from cache"]
    (cache / "gsm8k" / "test.jsonl").unlink()
    assert not hub.calls
    # no local copy: auto falls back to the hub, through datasets.load_dataset
    hub.rows = [{"question": "from hub", "answer": "y\n#### 5"}]
    ds = gsm8k_dataset("test")
    assert ds["question"] == ["from hub"] and ds["answer"] == ["5"]
    assert hub.calls == [(("openai/gsm8k", "main"), {"split": "test"})]


def test_nothing_found_names_every_place_and_the_fix(roots, hub, monkeypatch):
    env, shared, cache = roots
    hub.error = ConnectionError("no network")
    with pytest.raises(DataNotFoundError) as e:
        gsm8k_dataset("test")
    msg = str(e.value)
    for place in (env, shared, cache):
        assert str(place / "gsm8k" / "test.jsonl") in msg
    assert "openai/gsm8k" in msg and "no network" in msg and "Fix: set LLMRL_DATA_DIR" in msg
    # local only: the hub is not asked; an unset $LLMRL_DATA_DIR is named as such
    monkeypatch.delenv("LLMRL_DATA_DIR")
    hub.calls.clear()
    with pytest.raises(DataNotFoundError, match=r"\$LLMRL_DATA_DIR: not set"):
        load_mbpp("test", source="local")
    assert not hub.calls
    with pytest.raises(ValueError, match="source="):
        load_mbpp("test", source="ftp")


def test_benchmark_loaders_default_to_auto(roots, hub):
    env, _, _ = roots
    (env / "mbpp").mkdir(parents=True)
    row = {"task_id": 11, "text": "Return 1.", "code": "def f():\n    return 1", "test_list": ["assert f() == 1"] * 3,
           "test_setup_code": "", "challenge_test_list": []}
    (env / "mbpp" / "mbpp.jsonl").write_text(json.dumps(row) + "\n")
    assert [p.task_id for p in load_mbpp("test")] == ["mbpp/11"] and not hub.calls
    # HumanEval has no local copy here: auto asks the hub
    hub.rows = [{"task_id": "HumanEval/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
                 "test": "def check(candidate):\n    assert candidate() == 1\n", "entry_point": "f"}]
    assert [p.task_id for p in load_humaneval()] == ["HumanEval/0"]
    assert hub.calls[0][0] == ("openai/openai_humaneval",)
    # ... and reads the local copy once there is one
    (env / "humaneval").mkdir()
    with gzip.open(env / "humaneval" / "HumanEval.jsonl.gz", "wt") as f:
        f.write(json.dumps({**hub.rows[0], "task_id": "HumanEval/local"}) + "\n")
    assert [p.task_id for p in load_humaneval()] == ["HumanEval/local"] and len(hub.calls) == 1


def test_gsm8k_builder_takes_seed_and_it_does_not_change_rows(roots):
    env, _, _ = roots
    (env / "gsm8k").mkdir(parents=True)
    (env / "gsm8k" / "test.jsonl").write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) + "\n" for i in range(6)))
    a = gsm8k_dataset(split="test", n=3, seed=0)
    b = gsm8k_dataset(split="test", n=3, seed=7)
    assert a["question"] == b["question"] == ["q0", "q1", "q2"]  # same held-out problems for every seed


# --------------------------------------------------------------------------- the requires_data marker
MARKED = """
import pytest

@pytest.mark.requires_data("gsm8k")
def test_reads_gsm8k():
    pass
"""


@pytest.fixture
def marked(pytester, roots):
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(MARKED)
    return pytester


def test_missing_data_skips_with_one_reason(marked, monkeypatch):
    monkeypatch.delenv("LLMRL_REQUIRE_DATA", raising=False)
    result = marked.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*SKIPPED*data set 'gsm8k': no local copy of gsm8k/train.jsonl. Looked in:*"
                                 "Fix: set LLMRL_DATA_DIR*LLMRL_REQUIRE_DATA=1*"])


def test_missing_data_is_an_error_when_required(marked, monkeypatch):
    monkeypatch.setenv("LLMRL_REQUIRE_DATA", "1")
    result = marked.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*data set 'gsm8k': no local copy*a missing data set is an error*"])


def test_present_data_runs_the_test(marked, monkeypatch, roots):
    env, _, _ = roots
    _gsm8k(env, "q")
    (env / "gsm8k" / "train.jsonl").write_text("")
    monkeypatch.setenv("LLMRL_REQUIRE_DATA", "1")
    marked.runpytest().assert_outcomes(passed=1)


def test_ci_requires_the_data():
    ci = (REPO / ".ci" / "run").read_text()
    assert "LLMRL_REQUIRE_DATA=1" in ci and "make test" in ci
