"""The RL loop end to end on the tiny model: outputs, exact resume after kill -9, NaN stop,
LoRA, failing rewards, degenerate reward signal."""
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

from llmrl.config.load import validate_recipe
from llmrl.trainer.loop import DegenerateSignal, TrainingDiverged, train

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def recipe(tmp_path, **sections):
    raw = {
        "model": {"name_or_path": "tiny://arithmetic"},
        "data": {"name": "arithmetic", "train_size": 256, "eval_size": 16},
        "rollout": {"num_generations": 4, "max_completion_length": 6, "max_prompt_length": 32},
        "rewards": [{"name": "reward_fixtures:length_reward"}],
        "algorithm": {"epochs": 2, "num_minibatches": 2},
        "trainer": {"steps": 6, "prompts_per_step": 8, "micro_batch_size": 12, "lr": 1e-3, "seed": 3,
                    "output_dir": str(tmp_path / "run"), "eval_every": 3, "checkpoint_every": 2},
        "logging": {"progress": False, "tensorboard": False},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return raw


def metrics(path):
    return [json.loads(x) for x in (Path(path) / "metrics.jsonl").read_text().splitlines()]


def comparable(rows):
    # Everything but wall-clock timings must match between two runs with the same seed.
    return [{k: v for k, v in r.items() if not k.startswith("perf/") and k != "thr/time_s"} for r in rows]


def test_run_writes_metrics_samples_plot_and_final_model(tmp_path):
    summary = train(validate_recipe(recipe(tmp_path)))
    out = tmp_path / "run"
    rows = metrics(out)
    steps = [r["step"] for r in rows if "reward/mean" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert any("eval/accuracy" in r for r in rows if r["step"] == 3)
    assert all(r["loss/grad_norm"] > 0 for r in rows if "loss/grad_norm" in r)  # updates happened
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert {"prompt", "completion", "reward", "advantage"} <= set(samples[0])
    assert (out / "curves.png").stat().st_size > 5000
    assert (out / "final" / "config.json").exists()
    assert summary["steps"] == 6 and 0.0 <= summary["eval/accuracy_after"] <= 1.0


def trainable(ckpt_dir):
    from safetensors.torch import load_file

    return load_file(str(ckpt_dir / "trainable.safetensors"))


def test_kill9_then_resume_equals_uninterrupted_run(tmp_path):
    # The engine keeps its own copy of the weights (as vLLM does): a resume that forgot to sync it
    # would sample from the initial weights and diverge from the reference run.
    slow = {"rewards": [{"name": "reward_fixtures:slow_length_reward"}], "trainer": {"steps": 10},
            "rollout": {"engine": "engine_fixtures:copying_engine"}}
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref_dir.mkdir()
    cut_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    # the reference runs in a fresh process too: in this pytest process, global torch state left by
    # earlier tests (thread count, ...) can change reduction order and the weights by ~1e-6
    ref_path = tmp_path / "ref.yaml"
    ref_path.write_text(yaml.safe_dump(recipe(ref_dir, **slow)))
    ref = subprocess.run([sys.executable, "-m", "llmrl.cli", "train", str(ref_path)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr

    cut_raw = recipe(cut_dir, **slow)
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(cut_raw))
    cmd = [sys.executable, "-m", "llmrl.cli", "train", str(path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt4 = cut_dir / "run" / "checkpoints" / "step_0000004"
    deadline = time.time() + 120
    while not ckpt4.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt4.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"
    time.sleep(0.5)  # let it get into step 5, past the checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut_dir / "run" / "final").exists(), "the run finished before it was killed"

    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    # It really resumed at step 4 and ran only steps 5..10 (a restart from 0 reproduces the same
    # numbers, so the comparison below alone could not tell).
    summary = json.loads((cut_dir / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == [4] and summary["steps_this_session"] == 6
    assert "resumed from" in resumed.stderr and "step 4" in resumed.stderr
    ref_rows, cut_rows = comparable(metrics(ref_dir / "run")), comparable(metrics(cut_dir / "run"))
    assert [r["step"] for r in cut_rows] == [r["step"] for r in ref_rows]
    for a, b in zip(ref_rows, cut_rows):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)
    prompts = lambda d: [json.loads(x)["prompt"] for x in (d / "run" / "samples.jsonl").read_text().splitlines()]
    assert prompts(cut_dir) == prompts(ref_dir)  # same data order: nothing skipped or repeated
    w_ref = trainable(ref_dir / "run" / "checkpoints" / "step_0000010")
    w_cut = trainable(cut_dir / "run" / "checkpoints" / "step_0000010")
    for k in w_ref:
        torch.testing.assert_close(w_ref[k], w_cut[k], rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
    # One optimizer step per RL step: step 1 is still finite (and checkpointed), then lr 1e12 blows up.
    cfg = validate_recipe(recipe(tmp_path, algorithm={"epochs": 1, "num_minibatches": 1},
                                 trainer={"lr": 1e12, "max_grad_norm": None, "checkpoint_every": 1, "steps": 8}))
    with pytest.raises(TrainingDiverged, match=r"(?i)nan|inf") as info:
        train(cfg)
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert ckpts, "the last good checkpoint must be kept"
    assert str(ckpts[-1]) in str(info.value)
    state = trainable(ckpts[-1])
    assert all(torch.isfinite(v).all() for v in state.values())
    assert not (tmp_path / "run" / "final").exists()


def test_lora_trains_only_adapter_weights(tmp_path):
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.trainer.loop import setup
    from llmrl.trainer.step import rl_step

    cfg = validate_recipe(recipe(tmp_path, model={"lora": {"r": 4, "alpha": 8}}, trainer={"steps": 2}))
    train(cfg)
    after = trainable(tmp_path / "run" / "checkpoints" / "step_0000002")
    assert after and all("lora_" in k for k in after), "a LoRA checkpoint holds the adapters only, not the frozen base"
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in after.items()), "lora_B must move from its zero init"
    adapter = json.loads((tmp_path / "run" / "final" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "tiny://arithmetic", "final/ must name the base as the user gave it"

    run, state = setup(validate_recipe(recipe(tmp_path / "again", model={"lora": {"r": 4, "alpha": 8}})))
    rl_step(run, state, 1)
    run.logger.close()
    base_sd = load_model_and_tokenizer("tiny://arithmetic")[0].state_dict()
    for k, v in run.policy.state_dict().items():
        if "lora_" in k:
            continue
        base_key = k.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(v, base_sd[base_key]), f"{k} is not an adapter weight but changed"


def test_failing_rewards_do_not_stop_the_run(tmp_path):
    cfg = validate_recipe(recipe(tmp_path, rewards=[
        {"name": "reward_fixtures:raising_reward"},
        {"name": "reward_fixtures:hanging_reward", "timeout_s": 0.3},
        {"name": "reward_fixtures:length_reward"},
    ], trainer={"steps": 2, "eval_every": 0}))
    train(cfg)
    rows = [r for r in metrics(tmp_path / "run") if "reward/mean" in r]
    assert len(rows) == 2 and all(r["reward/raising_reward/failed"] == 1 for r in rows)
    assert all(r["reward/hanging_reward/failed"] == 1 for r in rows)


def test_constant_reward_is_reported_as_degenerate(tmp_path):
    cfg = validate_recipe(recipe(tmp_path, rewards=[{"name": "reward_fixtures:none_reward"}],
                                 trainer={"degenerate_patience": 3, "steps": 10}))
    with pytest.raises(DegenerateSignal, match="every reward the estimator compares was equal.*None"):
        train(cfg)


def test_warm_start_check_and_eval_accuracy_are_one_path(tmp_path, monkeypatch):
    """The warm start's early-stopping number and the trainer's eval/accuracy come from the same
    greedy evaluation: on the same model and held-out rows they are equal. A continuous reward
    with eval_success_threshold null scores its mean, so the number is not a trivial 0."""
    from llmrl.trainer.loop import evaluate, setup, warm_started_model

    monkeypatch.setenv("LLMRL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = validate_recipe(recipe(
        tmp_path, model={"name_or_path": "tiny://arithmetic",
                         "warm_start": {"max_steps": 10, "eval_every": 5, "target_accuracy": None, "eval_size": 16,
                                        "seed": 3, "num_examples": 256, "batch_size": 16}},
        trainer={"eval_success_threshold": None}))
    path = Path(warm_started_model(cfg, progress=False))
    stats = json.loads((path / "warm_start.json").read_text())
    run, _ = setup(cfg)
    ours = evaluate(run, 0)
    run.logger.close()
    assert 0.0 < stats["accuracy"] < 1.0
    assert ours["eval/accuracy"] == pytest.approx(stats["accuracy"], abs=1e-6)


def test_lora_on_a_warm_start_saves_a_final_model_that_loads_without_the_cache(tmp_path, monkeypatch):
    """The warm-started base lives in the local cache; final/ must not depend on it."""
    import shutil

    from llmrl.models.load import load_model_and_tokenizer

    monkeypatch.setenv("LLMRL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = validate_recipe(recipe(
        tmp_path, model={"name_or_path": "tiny://arithmetic", "lora": {"r": 4, "alpha": 8},
                         "warm_start": {"max_steps": 2, "eval_every": 2, "target_accuracy": None, "eval_size": 8,
                                        "num_examples": 64, "batch_size": 16}},
        trainer={"steps": 1, "eval_every": 0}))
    train(cfg)
    final = tmp_path / "run" / "final"
    base = json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert str(tmp_path / "cache") not in base
    shutil.rmtree(tmp_path / "cache" / "warm_start")
    model, _ = load_model_and_tokenizer(str(final), device="cpu")
    assert any("lora_" in n for n, _ in model.named_parameters())
