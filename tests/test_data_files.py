"""Local CSV / parquet / JSON Lines files (data.name: file) and hub data sets (data.name: hf)
through ``datasets``: formats from the suffix, columns renamed, a held-out split from one file,
and errors that name the key and the file (exit 2 from ``llmrl train``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmrl.data.registry import build_dataset, file_dataset, hub_dataset

REPO = Path(__file__).resolve().parent.parent
ROWS = [{"question": f"{i}+1=", "solution": str(i + 1)} for i in range(20)]


def write(path: Path, rows=ROWS) -> Path:
    import pandas as pd

    df = pd.DataFrame(rows)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path)
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".json"])
def test_each_format_loads_with_columns_renamed(tmp_path, suffix):
    train, test = write(tmp_path / f"train{suffix}"), write(tmp_path / f"test{suffix}", ROWS[:3])
    args = {"train_path": str(train), "test_path": str(test), "columns": {"prompt": "question"}}
    ds = build_dataset("file", "train", n=None, seed=0, args=args)
    assert ds.column_names == ["prompt", "solution"] and list(ds["prompt"]) == [r["question"] for r in ROWS]
    assert [str(x) for x in ds["solution"]] == [r["solution"] for r in ROWS]  # CSV reads numbers as numbers
    assert len(build_dataset("file", "test", n=None, seed=0, args=args)) == 3


def test_one_file_holds_out_a_fixed_test_split(tmp_path):
    f = write(tmp_path / "all.csv")
    train = file_dataset(split="train", n=None, seed=0, path=str(f))
    test = file_dataset(split="test", n=None, seed=0, path=str(f))
    assert (len(train), len(test)) == (18, 2)  # test_fraction 0.1 of 20 rows
    assert not set(train["question"]) & set(test["question"])
    # the same split whatever the seed: the warm start draws training rows with seed + 1
    assert list(file_dataset(split="test", n=None, seed=7, path=str(f))["question"]) == list(test["question"])
    assert len(file_dataset(split="test", n=None, seed=0, path=str(f), test_fraction=0)) == 20


@pytest.mark.parametrize("name, content, args, expected", [
    ("missing.csv", None, {}, ["data.args.path", "file not found", "missing.csv"]),
    ("empty.jsonl", "", {}, ["data.args.path", "empty.jsonl is empty"]),
    ("header.csv", "question,solution\n", {}, ["header.csv holds no rows"]),
    ("bad.jsonl", '{"question": "1+1="}\n{"question": \n', {}, ["not a readable JSON / JSON Lines file", "bad.jsonl"]),
    ("bad.csv", 'question,solution\n"1+1=,2\n', {}, ["not a readable CSV file", "bad.csv"]),
    ("bad.parquet", "not parquet", {}, ["not a readable parquet file", "bad.parquet"]),
    ("data.txt", "question\n1+1=\n", {}, ["data.args.path", "cannot tell the format", "data.args.format"]),
    ("ok.csv", "question,solution\n1+1=,2\n", {"columns": {"prompt": "q"}},
     ["data.args.columns", "'q' not a column", "question, solution"]),
])
def test_bad_files_name_the_key_and_the_file(tmp_path, name, content, args, expected):
    f = tmp_path / name
    if content is not None:
        f.write_text(content)
    with pytest.raises(ValueError) as info:
        file_dataset(split="train", n=None, seed=0, path=str(f), test_fraction=0, **args)
    for text in expected:
        assert text in str(info.value), str(info.value)


def test_split_path_is_named_in_errors(tmp_path):
    with pytest.raises(ValueError, match="data.args.test_path: file not found"):
        file_dataset(split="test", n=None, seed=0, train_path=str(write(tmp_path / "t.csv")),
                     test_path=str(tmp_path / "nope.csv"))
    with pytest.raises(ValueError, match="needs 'path'"):
        file_dataset(split="train", n=None, seed=0)


def test_hub_data_set_columns_and_errors(monkeypatch):
    import datasets

    calls = []

    def fake_load(path, config, split, **kw):
        calls.append((path, config, split))
        if path == "nobody/nothing":
            raise FileNotFoundError("Dataset 'nobody/nothing' doesn't exist on the Hub")
        return datasets.Dataset.from_list(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    ds = hub_dataset(split="test", n=None, seed=0, path="openai/gsm8k", config="main",
                     columns={"prompt": "question", "answer": "solution"})
    assert ds.column_names == ["prompt", "answer"] and calls[-1] == ("openai/gsm8k", "main", "test")
    assert hub_dataset(split="train", n=None, seed=0, path="x/y", prompt_field="question").column_names[0] == "prompt"
    with pytest.raises(ValueError, match=r"data.args.path: could not load the hub data set 'nobody/nothing'.*doesn't exist"):
        hub_dataset(split="train", n=None, seed=0, path="nobody/nothing")
    with pytest.raises(ValueError, match="data.args.columns: 'q' not a column"):
        hub_dataset(split="train", n=None, seed=0, path="x/y", columns={"prompt": "q"})


def _recipe(tmp_path: Path, args: dict) -> Path:
    import yaml

    recipe = {
        "model": {"name_or_path": "tiny://arithmetic"},
        "data": {"name": "file", "args": args, "train_size": None, "eval_size": 4},
        "rollout": {"num_generations": 2, "max_completion_length": 4, "max_prompt_length": 32},
        "rewards": [{"name": "math"}],
        "trainer": {"steps": 1, "prompts_per_step": 2, "micro_batch_size": 4, "device": "cpu", "num_threads": 1,
                    "output_dir": str(tmp_path / "run"), "eval_every": 0, "checkpoint_every": 0},
        "logging": {"progress": False, "tensorboard": False, "plot": False},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_csv_trains_with_its_answer_column_reaching_the_reward(tmp_path):
    from llmrl.config.load import load_recipe
    from llmrl.trainer.loop import train

    f = write(tmp_path / "qa.csv")
    summary = train(load_recipe(_recipe(tmp_path, {"path": str(f), "columns": {"prompt": "question",
                                                                               "answer": "solution"}})))
    assert summary["steps"] == 1 and 0.0 <= summary["eval/accuracy_after"] <= 1.0


@pytest.mark.parametrize("case", ["malformed", "no_prompt_column"])
def test_cli_exits_2_for_a_bad_data_file(tmp_path, case):
    f = tmp_path / "qa.jsonl"
    if case == "malformed":
        f.write_text('{"prompt": "1+1="}\n{oops\n')
    else:
        write(f)
    proc = subprocess.run([sys.executable, "-m", "llmrl.cli", "train", str(_recipe(tmp_path, {"path": str(f)}))],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    if case == "malformed":
        assert "data.args.path" in err and "not a readable JSON / JSON Lines file" in err
    else:
        assert "data.prompt_column: 'prompt' is not a column" in err and "question" in err
