"""`llmrl train` on two gloo processes (torchrun, as `accelerate launch` starts it) equals one
process with the same global batch, and a two-process run killed with SIGKILL resumes exactly.

Real launcher, real CLI, real tiny Llama, real checkpoints: nothing is mocked. The one process
samples with ``rollout.seed_per_chunk`` (each chunk of ``generation_batch_size`` prompts from its
own seed), which two processes always do, so both draw the same completions."""
from __future__ import annotations

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
from safetensors.torch import load_file

REWARD = '''
import os, time

def digit_share(prompts, completions, **kw):
    """A reward that differs inside every group (so every step has a gradient)."""
    if os.environ.get("SLOW_REWARD"):
        time.sleep(0.6)  # the killed run: steps slow enough to be killed mid-run
    return [sum(c.isdigit() for c in x) / max(len(x), 1) for x in completions]


def flat_on_minus(prompts, completions, **kw):
    """Flat (every completion 0.5) for prompts with a '-': those groups carry no signal and
    algorithm.skip_zero_variance_groups drops them. Logs whether this call's rows were all flat."""
    flat = ["-" in p for p in prompts]
    with open(os.environ["FLAT_LOG"], "a") as f:
        f.write(f"{os.environ.get('RANK', '0')} {len(prompts)} {int(all(flat))}\\n")
    return [0.5 if fl else sum(ch.isdigit() for ch in c) / max(len(c), 1) for fl, c in zip(flat, completions)]
'''
STEPS = 4


def _recipe(tmp: Path, out: Path, reward: str = "digit_share", skip_flat: bool = False, eval_size: int = 2,
            **trainer) -> Path:
    recipe = {
        "model": {"name_or_path": "tiny://arithmetic"},
        "data": {"name": "arithmetic", "train_size": 64, "eval_size": eval_size},
        "rollout": {"num_generations": 4, "max_completion_length": 6, "max_prompt_length": 32,
                    "generation_batch_size": 2, "seed_per_chunk": True},
        "rewards": [{"name": f"scale_reward:{reward}"}],
        "algorithm": {"advantage": "grpo", "loss_agg": "token-mean", "skip_zero_variance_groups": skip_flat},
        # SGD: Adam divides by sqrt(v) and turns 1e-9 summation-order noise of tiny gradients into 1e-3
        "trainer": {"steps": STEPS, "prompts_per_step": 4, "micro_batch_size": 3, "device": "cpu", "num_threads": 1,
                    "optimizer": "SGD", "lr": 0.5, "lr_scheduler": "constant", "warmup_steps": 0,
                    "output_dir": str(out), "eval_every": 0, "checkpoint_every": 1, "keep_checkpoints": 10,
                    **trainer},
        "logging": {"progress": False, "tensorboard": False, "plot": False, "samples_per_step": 0},
    }
    path = tmp / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cmd(recipe: Path, procs: int, *extra: str) -> list[str]:
    if procs == 1:
        return [sys.executable, "-m", "llmrl", "train", str(recipe), *extra]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
            "-m", "llmrl", "train", str(recipe), *extra]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", **extra}


def _train(tmp: Path, recipe: Path, procs: int, *extra: str, **env: str) -> None:
    proc = subprocess.run(_cmd(recipe, procs, *extra), env=_env(tmp, **env), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-6000:]


def _rows(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _metrics(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in _rows(out) if "loss/policy" in r}


def _params(out: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(out / "checkpoints" / f"step_{step:07d}" / "trainable.safetensors"))


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (read from /proc: no psutil needed)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def test_two_processes_equal_one_and_a_killed_run_resumes_exactly(tmp_path):
    (tmp_path / "scale_reward.py").write_text(REWARD)
    one, two, killed = tmp_path / "one", tmp_path / "two", tmp_path / "killed"
    _train(tmp_path, _recipe(tmp_path, one), 1)
    _train(tmp_path, _recipe(tmp_path, two), 2)
    m1, m2 = _metrics(one), _metrics(two)
    assert sorted(m2) == list(range(1, STEPS + 1))
    for step in (1, 2, 3):
        for key in ("loss/policy", "loss/grad_norm", "reward/mean", "train/rows"):
            assert m2[step][key] == pytest.approx(m1[step][key], abs=1e-5), (step, key)
        p1, p2 = _params(one, step), _params(two, step)
        for name in p1:
            torch.testing.assert_close(p2[name], p1[name], atol=1e-5, rtol=0)
    assert m2[1]["train/rows"] == 16 and m2[1]["loss/grad_norm"] > 0
    first, third = _params(one, 1), _params(one, 3)
    assert max((third[n] - first[n]).abs().max().item() for n in first) > 1e-3  # training moved: not vacuous

    # kill -9 the whole two-process run after its first checkpoint, then resume it
    rec = _recipe(tmp_path, killed)
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(_cmd(rec, 2), env=_env(tmp_path, SLOW_REWARD="1"), stdout=log, stderr=log)
    deadline = time.time() + 240
    while not (killed / "checkpoints" / "step_0000001").exists():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
        time.sleep(0.02)
    for pid in [proc.pid, *_descendants(proc.pid)]:  # torchrun's workers run in sessions of their own
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    done = sorted(p.name for p in (killed / "checkpoints").glob("step_*"))
    assert f"step_{STEPS:07d}" not in done and not (killed / "final").exists(), done  # killed mid-run
    _train(tmp_path, rec, 2, "--resume")
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from"] and summary["resumed_from"][0] < STEPS
    mk = _metrics(killed)
    for step in range(summary["resumed_from"][0] + 1, STEPS + 1):
        for key in ("loss/policy", "loss/grad_norm", "reward/mean"):
            assert mk[step][key] == pytest.approx(m2[step][key], abs=1e-6), (step, key)
    pk, p2 = _params(killed, STEPS), _params(two, STEPS)
    for name in p2:
        torch.testing.assert_close(pk[name], p2[name], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_flat_groups_are_dropped_and_heldout_is_evaluated_once_across_ranks(tmp_path):
    """skip_zero_variance_groups with 2 processes drops the groups one process drops (a rank
    left with no rows joins the update with an empty share), and the held-out evaluation is
    sharded (each prompt scored once, 5 prompts over 2 ranks) with the one-process figures."""
    (tmp_path / "scale_reward.py").write_text(REWARD)
    one, two = tmp_path / "one", tmp_path / "two"
    for out, procs in ((one, 1), (two, 2)):
        _train(tmp_path, _recipe(tmp_path, out, reward="flat_on_minus", skip_flat=True, eval_size=5,
                                 checkpoint_every=0), procs, FLAT_LOG=str(tmp_path / f"{out.name}.log"))
    m1, m2 = ({r["step"]: r for r in _rows(out) if "reward/mean" in r} for out in (one, two))
    assert sorted(m1) == sorted(m2) == list(range(1, STEPS + 1))
    assert 0 < sum(m1[s]["train/rows"] for s in m1) < 16 * STEPS  # some groups were flat and dropped: not vacuous
    for step in m1:
        assert ("loss/policy" in m2[step]) == ("loss/policy" in m1[step]), step  # a step with no rows: no update
        for key in ("loss/policy", "loss/grad_norm", "reward/mean", "train/rows", "reward/zero_variance_frac"):
            if key in m1[step]:
                assert m2[step][key] == pytest.approx(m1[step][key], abs=1e-5), (step, key)
    p1, p2 = _params(one, STEPS), _params(two, STEPS)
    for name in p1:
        torch.testing.assert_close(p2[name], p1[name], atol=1e-5, rtol=0)
    # some rank had every one of its groups flat (no rows) at some step and still trained along
    calls = [line.split() for line in (tmp_path / "two.log").read_text().splitlines()]
    assert any(n == "8" and flat == "1" for _, n, flat in calls), calls
    # held-out: 5 prompts, scored once each over the ranks (3 + 2 per evaluation), same figures as 1 process
    evals = [(rank, int(n)) for rank, n, _ in calls if n != "8"]
    assert sorted(n for _, n in evals) == sorted([2, 3] * 2), evals
    e1 = [r for r in _rows(one) if "eval/accuracy" in r]
    e2 = [r for r in _rows(two) if "eval/accuracy" in r]
    assert len(e1) == len(e2) == 2
    for a, b in zip(e1, e2):
        for key in ("eval/accuracy", "eval/reward_mean"):
            assert b[key] == pytest.approx(a[key], abs=1e-6), key
