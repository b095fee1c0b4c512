"""Resume you can trust: settings that would make another experiment are refused and leave the
run folder as it was; settings that may change are applied and recorded; a finished run says
so; a corrupt newest checkpoint falls back to the previous one; Ctrl-C writes a checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmrl.config.load import validate_recipe
from llmrl.trainer.loop import train

from test_trainer import recipe

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 2-step run with a checkpoint after each step."""
    tmp = tmp_path_factory.mktemp("resume")
    raw = recipe(tmp, trainer={"steps": 2, "checkpoint_every": 1, "eval_every": 0}, data={"eval_size": 4})
    train(validate_recipe(raw))
    return tmp, raw


def _copy(finished, tmp_path):
    import shutil

    src, raw = finished
    shutil.copytree(src / "run", tmp_path / "run")
    raw = json.loads(json.dumps(raw))
    raw["trainer"]["output_dir"] = str(tmp_path / "run")
    return raw


@pytest.mark.parametrize("section, key, value", [("trainer", "lr", 0.5), ("model", "name_or_path", "tiny://code"),
                                                 ("algorithm", "kl_coef", 0.1), ("data", "train_size", 128)])
def test_changed_experiment_settings_are_refused_and_nothing_changes(finished, tmp_path, section, key, value):
    raw = _copy(finished, tmp_path)
    before = (tmp_path / "run" / "recipe.yaml").read_text()
    raw[section][key] = value
    raw["trainer"]["steps"] = 3
    with pytest.raises(ValueError, match=rf"{section}.{key}"):
        train(validate_recipe(raw), resume=True)
    assert (tmp_path / "run" / "recipe.yaml").read_text() == before
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_0000001", "step_0000002"]


def test_more_steps_are_applied_and_recorded(finished, tmp_path):
    raw = _copy(finished, tmp_path)
    raw["trainer"]["steps"] = 3
    raw["trainer"]["eval_every"] = 5                     # cadence, logging and memory savers may change
    raw.setdefault("model", {})["gradient_checkpointing"] = True
    raw["logging"]["samples_per_step"] = 1
    summary = train(validate_recipe(raw), resume=True)
    assert summary["resumed_from"] == [2] and summary["steps_this_session"] == 1
    assert yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())["trainer"]["steps"] == 3
    steps = [r["step"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())]
    assert steps == sorted(steps) and steps[-1] == 3


def test_finished_run_and_too_few_steps_say_so(finished, tmp_path):
    raw = _copy(finished, tmp_path)
    with pytest.raises(ValueError, match="already finished at step 2"):
        train(validate_recipe(raw), resume=True)
    raw["trainer"]["steps"] = 1
    with pytest.raises(ValueError, match="at step 2, beyond trainer.steps=1"):
        train(validate_recipe(raw), resume=True)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(finished, tmp_path, caplog):
    raw = _copy(finished, tmp_path)
    newest = tmp_path / "run" / "checkpoints" / "step_0000002"
    for f in newest.iterdir():
        f.write_bytes(f.read_bytes()[:100])  # truncated, as by a crash or a full disk
    raw["trainer"]["steps"] = 3
    summary = train(validate_recipe(raw), resume=True)
    assert summary["resumed_from"] == [1] and summary["steps_this_session"] == 2
    assert any("step_0000002" in r.getMessage() and "cannot be read" in r.getMessage() for r in caplog.records)


def test_sigint_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    raw = recipe(tmp_path, rewards=[{"name": "reward_fixtures:slow_length_reward"}],
                 trainer={"steps": 50, "checkpoint_every": 0, "eval_every": 0}, data={"eval_size": 4})
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = dict(os.environ, PYTHONPATH=str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "llmrl.cli", "train", str(path)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any('"reward/mean"' in line for line in metrics.read_text().splitlines()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "checkpoint" in err
    saved = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert saved, "no checkpoint written on Ctrl-C"
    step = int(saved[-1].name.split("_")[1])
    logged = [json.loads(x)["step"] for x in metrics.read_text().splitlines() if '"reward/mean"' in x]
    assert step == logged[-1] >= 1  # the checkpoint is of the last finished step: nothing lost
