"""User errors exit 2 naming the cause and the fix, failures during training exit 1 with the
cause, neither with a traceback."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmrl.config.load import validate_recipe
from llmrl.trainer import checkpoint as ckpt

from test_trainer import recipe

TESTS = Path(__file__).resolve().parent
TINY = TESTS.parent / "recipes" / "tiny" / "math_grpo.yaml"


def _train(cwd, *sets):
    args = [sys.executable, "-m", "llmrl.cli", "train", str(TINY), "--set", "model.warm_start=null"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=180)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_exits_2(tmp_path):
    proc = _train(tmp_path, "trainer.device=cuda", f"trainer.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "trainer.device" in proc.stderr and "CUDA is not available" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def test_bogus_device_exits_2(tmp_path):
    proc = _train(tmp_path, "trainer.device=gpu0", f"trainer.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "'gpu0' is not a device" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_output_dir_that_cannot_be_a_folder_exits_2(tmp_path, where):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    out = f if where == "file" else f / "run"
    proc = _train(tmp_path, f"trainer.output_dir={out}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "trainer.output_dir" in proc.stderr and "Traceback" not in proc.stderr
    assert f.read_text() == "keep me"


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    calls = []
    real = ckpt.save_file

    def full_disk(tensors, path, *a, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **kw)

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    from llmrl.trainer.loop import train

    cfg = validate_recipe(recipe(tmp_path, trainer={"steps": 4, "checkpoint_every": 1, "eval_every": 0}))
    with pytest.raises(ckpt.CheckpointWriteError, match=r"step 2.*No space left.*step_0000001.*--resume"):
        train(cfg)
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step_0000001"]  # no half-written folder left behind
    ckpt.read_checkpoint(tmp_path / "run" / "checkpoints" / "step_0000001")


def test_checkpoint_failure_exits_1_with_the_cause(tmp_path, monkeypatch):
    import typer

    import llmrl.trainer.loop as loop
    from llmrl.trainer.cli import run_recipe

    def failing(cfg, resume=False):
        raise ckpt.CheckpointWriteError("could not write the checkpoint of step 3 (disk full)")

    monkeypatch.setattr(loop, "train", failing)
    with pytest.raises(typer.Exit) as exc:
        run_recipe(TINY, ["model.warm_start=null", f"trainer.output_dir={tmp_path / 'run'}"], False)
    assert exc.value.exit_code == 1
