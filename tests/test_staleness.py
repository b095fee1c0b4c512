"""rollout.max_staleness: 1 (rewards of step t scored while step t+1 generates): each batch is
sampled by the weights one update behind those it trains, the metrics say so, the sampler
correction sees the lag, the run learns, and a kill -9 resumes exactly (the batch generated
ahead is in the checkpoint). With 0 every batch is sampled by the latest weights."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import engine_fixtures
from llmrl.config.load import RecipeError, validate_recipe
from llmrl.trainer.loop import check_multi_process, resume_conflicts, train
from test_trainer import comparable, metrics, recipe, trainable

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _run(tmp_path, staleness: int, steps: int):
    raw = recipe(tmp_path, rollout={"max_staleness": staleness, "engine": "engine_fixtures:version_recording_engine"},
                 rewards=[{"name": "reward_fixtures:digit_fraction_reward"}],
                 algorithm={"epochs": 1, "num_minibatches": 1},
                 trainer={"steps": steps, "lr": 3e-3, "eval_every": 0, "checkpoint_every": 0}, data={"eval_size": 0})
    train(validate_recipe(raw))
    return [r for r in metrics(tmp_path / "run") if "reward/mean" in r], list(engine_fixtures.SAMPLED_VERSIONS)


def test_one_step_stale_batches_come_from_the_previous_weights_and_the_run_learns(tmp_path, one_torch_thread):
    rows, versions = _run(tmp_path, 1, 12)
    # Batch 1 by the initial weights (nothing generated ahead); batch s >= 2 generated during step s-1,
    # before its update: by the weights after step s-2's update.
    assert versions == [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert [r["rollout/staleness"] for r in rows] == [0] + [1] * 11
    assert rows[0]["sampler/logp_diff_abs_mean"] < 1e-6            # step 1: the sampler is pi_old
    assert all(r["sampler/logp_diff_abs_mean"] > 1e-3 for r in rows[1:])   # later: one update apart, corrected
    assert all("perf/reward_wait_s" in r for r in rows[:-1]) and "perf/reward_wait_s" not in rows[-1]
    first, last = [sum(r["reward/mean"] for r in rows[i]) / 3 for i in (slice(0, 3), slice(-3, None))]
    assert last > first + 0.25, (first, last)                       # learned: ~0.12 -> ~0.6


def test_staleness_off_samples_every_batch_with_the_latest_weights(tmp_path, one_torch_thread):
    rows, versions = _run(tmp_path, 0, 4)
    assert versions == [0, 1, 2, 3]
    assert all("rollout/staleness" not in r and "perf/reward_wait_s" not in r for r in rows)
    assert all(r["sampler/logp_diff_abs_mean"] < 1e-6 for r in rows)


def test_staleness_is_validated_and_refused_with_several_processes(tmp_path):
    with pytest.raises(RecipeError, match=r"rollout\.max_staleness"):
        validate_recipe(recipe(tmp_path, rollout={"max_staleness": 2}))
    with pytest.raises(ValueError, match=r"rollout\.max_staleness: 1 runs in one process"):
        check_multi_process(validate_recipe(recipe(tmp_path, rollout={"max_staleness": 1})), 2)


def test_a_checkpoint_from_before_the_key_resumes_unless_the_recipe_turns_it_on(tmp_path):
    cfg = validate_recipe(recipe(tmp_path))
    saved = cfg.model_dump(mode="json")
    del saved["rollout"]["max_staleness"]        # written before rollout.max_staleness existed
    assert resume_conflicts(saved, cfg) == []
    stale = validate_recipe(recipe(tmp_path, rollout={"max_staleness": 1}))
    assert resume_conflicts(saved, stale) == ["rollout.max_staleness: checkpoint has None, recipe has 1"]


@pytest.mark.slow   # three CLI runs: ~60 s at load 2, 145 s at load 6
def test_kill9_then_resume_with_staleness_equals_uninterrupted_run(tmp_path):
    # The checkpoint after step 2 holds batch 3, generated ahead by the weights of step 1: a resume
    # that regenerated it from step 2's weights would differ from the reference from step 3 on.
    slow = {"rewards": [{"name": "reward_fixtures:slow_length_reward"}], "trainer": {"steps": 5},
            "rollout": {"engine": "engine_fixtures:copying_engine", "max_staleness": 1},
            "data": {"eval_size": 4}}
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    runs = {}
    for name in ("ref", "cut"):
        (tmp_path / name).mkdir()
        runs[name] = tmp_path / f"{name}.yaml"
        runs[name].write_text(yaml.safe_dump(recipe(tmp_path / name, **slow)))
    cmd = lambda name: [sys.executable, "-m", "llmrl.cli", "train", str(runs[name])]
    ref = subprocess.Popen(cmd("ref"), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc = subprocess.Popen(cmd("cut"), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt2 = tmp_path / "cut" / "run" / "checkpoints" / "step_0000002"
    deadline = time.time() + 120
    while not ckpt2.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt2.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"
    time.sleep(0.3)   # into step 3, past the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "run" / "final").exists(), "the run finished before it was killed"
    state = torch.load(ckpt2 / "state.pt", weights_only=True)
    assert state["pending"]["step"] == 3 and state["pending"]["staleness"] == 1
    assert ref.wait(300) == 0, ref.stderr.read().decode()
    resumed = subprocess.run(cmd("cut") + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((tmp_path / "cut" / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == [2] and summary["steps_this_session"] == 3
    ref_rows, cut_rows = comparable(metrics(tmp_path / "ref" / "run")), comparable(metrics(tmp_path / "cut" / "run"))
    assert [r.get("rollout/staleness") for r in cut_rows if "reward/mean" in r] == [0, 1, 1, 1, 1]
    assert [r["step"] for r in cut_rows] == [r["step"] for r in ref_rows]
    for a, b in zip(ref_rows, cut_rows):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)
    w_ref = trainable(tmp_path / "ref" / "run" / "checkpoints" / "step_0000005")
    w_cut = trainable(tmp_path / "cut" / "run" / "checkpoints" / "step_0000005")
    for k in w_ref:
        torch.testing.assert_close(w_ref[k], w_cut[k], rtol=1e-5, atol=1e-6)
