"""`llmrl eval` resumes only results of the same evaluation: keyed by the samples file's content,
or the model's folder and files, plus benchmark, split, sampling and harness version. Both bugs
of issue 10 are reproduced as a user hits them, through the real CLI and the real sandbox."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmrl.eval.benchmarks import load_benchmark

REPO = Path(__file__).resolve().parent.parent


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "llmrl.cli", "eval", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def _write_samples(path: Path, *, correct: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    problems = load_benchmark("humaneval", None, style="completion")[:2]
    with open(path, "w") as f:
        for p in problems:
            completion = p.solutions[0] if correct else "    return None\n"
            f.write(json.dumps({"task_id": p.task_id, "completion": completion}) + "\n")
    return path


@pytest.mark.requires_data("humaneval")
def test_same_file_name_in_two_folders_is_not_resumed(tmp_path):
    a = _write_samples(tmp_path / "a" / "samples.jsonl", correct=True)
    b = _write_samples(tmp_path / "b" / "samples.jsonl", correct=False)
    first = _cli("humaneval", "--samples", str(a), "--no-progress", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = _cli("humaneval", "--samples", str(b), "--no-progress", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming" not in second.stdout
    summary = json.loads(second.stdout[second.stdout.index("{\n"):])
    assert summary["pass@k"]["1"] == 0.0  # b's samples are all wrong (a's were all right)
    assert str(b.resolve()) in summary["evaluated"] and str(b.resolve()) in second.stdout
    # the same file again does resume
    again = _cli("humaneval", "--samples", str(a), "--no-progress", cwd=tmp_path)
    assert again.returncode == 0 and "resuming: 2 problems already scored" in again.stdout


@pytest.mark.requires_data("humaneval")
def test_explicit_out_with_other_samples_is_refused_until_overwrite(tmp_path):
    a = _write_samples(tmp_path / "a" / "samples.jsonl", correct=True)
    b = _write_samples(tmp_path / "b" / "samples.jsonl", correct=False)
    out = tmp_path / "out"
    assert _cli("humaneval", "--samples", str(a), "--out", str(out), "--no-progress", cwd=tmp_path).returncode == 0
    refused = _cli("humaneval", "--samples", str(b), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "different evaluation" in refused.stderr and "source.sha256" in refused.stderr
    assert "--overwrite" in refused.stderr
    # a command that fails (here: a malformed samples file) leaves the folder as it was, --overwrite or not
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    failed = _cli("humaneval", "--samples", str(bad), "--out", str(out), "--overwrite", "--no-progress", cwd=tmp_path)
    assert failed.returncode == 2 and json.loads((out / "summary.json").read_text())["pass@k"]["1"] == 1.0
    redone = _cli("humaneval", "--samples", str(b), "--out", str(out), "--overwrite", "--no-progress", "--json",
                  cwd=tmp_path)
    assert redone.returncode == 0 and "resuming" not in redone.stdout
    assert json.loads((out / "summary.json").read_text())["pass@k"]["1"] == 0.0
    # a folder with results but no key (an older llmrl) is not trusted either
    (out / "key.json").unlink()
    legacy = _cli("humaneval", "--samples", str(b), "--out", str(out), "--no-progress", cwd=tmp_path)
    assert legacy.returncode == 2 and "no readable key.json" in legacy.stderr


def _tiny_final(folder: Path, seed: int) -> Path:
    from llmrl.models.tiny import build_tiny_model

    return build_tiny_model(folder / "final", seed=seed, hidden_size=32, num_layers=1, num_heads=2,
                            max_position_embeddings=512)


@pytest.mark.requires_data("mbpp")
def test_two_models_both_saved_as_final_are_not_mixed_up(tmp_path):
    x = _tiny_final(tmp_path / "runs" / "X", seed=1)
    y = _tiny_final(tmp_path / "runs" / "Y", seed=2)
    args = ("--limit", "2", "--n", "1", "--max-new-tokens", "8", "--max-prompt-length", "256", "--no-progress",
            "--batch-size", "2")
    first = _cli("mbpp", "--model", "runs/X/final", *args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = _cli("mbpp", "--model", "runs/Y/final", *args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming" not in second.stdout
    assert str(y.resolve()) in second.stdout  # the report names the model evaluated
    outs = sorted((tmp_path / "runs" / "eval").iterdir())
    assert len(outs) == 2 and all("final" in o.name for o in outs)
    by_path = {json.loads((o / "key.json").read_text())["source"]["path"]: o for o in outs}
    assert set(by_path) == {str(x.resolve()), str(y.resolve())}
    comps = {p: [json.loads(l)["completions"] for l in (o / "results.jsonl").read_text().splitlines()]
             for p, o in by_path.items()}
    assert comps[str(x.resolve())] != comps[str(y.resolve())]  # Y's own samples, not X's results


@pytest.mark.requires_data("mbpp")
def test_missing_model_path_exits_2(tmp_path):
    proc = _cli("mbpp", "--model", "runs/nope/final", "--limit", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "no such folder" in proc.stderr and "Traceback" not in proc.stderr
