"""PPO with a learned critic through the real trainer on the tiny model: the critic learns on a
fixed batch, warm-up and pretraining leave the actor alone, recipe rules, the KL in the reward,
and kill -9 + resume with a critic equal to the uninterrupted run."""
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

from llmrl.config.load import validate_recipe
from llmrl.rollout.types import ENV, PAD, POLICY, RolloutBatch
from llmrl.trainer.loop import train

from test_trainer import comparable, metrics, recipe, trainable

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")
PPO = {"algorithm": {"advantage": "gae", "epochs": 2, "num_minibatches": 2, "lambda_actor": 0.95},
       "critic": {"lr": 1e-3}}


def _batch() -> RolloutBatch:
    g = torch.Generator().manual_seed(0)
    n, p, c = 6, 5, 7
    owner = torch.full((n, c), POLICY)
    owner[1, 2:4] = ENV                       # a tool result in the middle of a completion
    owner[2, 5:] = PAD
    return RolloutBatch(prompt_ids=torch.randint(3, 15, (n, p), generator=g), prompt_mask=torch.ones(n, p, dtype=torch.long),
                        completion_ids=torch.randint(3, 15, (n, c), generator=g), token_owner=owner,
                        group_ids=torch.arange(n) // 2, finish_reason=["stop"] * n, prompts=[""] * n,
                        completions=[""] * n)


def test_critic_loss_falls_on_a_fixed_batch():
    from llmrl.algorithms.advantages import TokenParams, estimate
    from llmrl.trainer.critic import CriticUpdate, critic_loss, load_critic, values_forward

    torch.manual_seed(0)
    critic = load_critic("tiny://arithmetic")
    batch = _batch()
    mask = batch.loss_mask
    v0 = values_forward(critic, batch, micro_batch_size=4)
    assert v0.shape == mask.shape and (v0[mask == 0] == 0).all()
    adv = estimate("gae", torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]), mask, group_size=2, values=v0,
                   params=TokenParams(lambda_critic=1.0))
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    up = CriticUpdate(critic, v0, adv.returns, clip=None)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss, _ = critic_loss(up, batch, torch.arange(len(batch)), num_tokens=float(mask.sum()))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # lambda_critic 1, gamma 1: every policy token's target is its row's reward
    assert losses[-1] < 0.05 * losses[0], losses[::10]
    v = values_forward(critic, batch, micro_batch_size=6)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0]).unsqueeze(1).expand_as(v)
    assert (v - target)[mask.bool()].abs().max() < 0.3


def test_warmup_trains_only_the_critic_and_pretraining_happens_before_step_one(tmp_path):
    raw = recipe(tmp_path, **PPO, trainer={"steps": 2, "eval_every": 0, "checkpoint_every": 1})
    raw["critic"].update({"warmup_steps": 1, "pretrain_steps": 2})
    summary = train(validate_recipe(raw))
    rows = [r for r in metrics(tmp_path / "run") if "reward/mean" in r]
    assert [r["step"] for r in rows] == [1, 2] and summary["steps"] == 2
    assert rows[0]["loss/grad_norm"] == 0.0 and rows[1]["loss/grad_norm"] > 0   # actor frozen in step 1
    assert rows[0]["loss/critic_grad_norm"] > 0 and rows[0]["loss/value"] > 0
    for r in rows:   # explained variance over the whole batch, and the value/return means
        assert {"critic/explained_variance", "critic/value_mean", "critic/return_mean", "loss/value_clipfrac"} <= set(r)
    from llmrl.models.load import load_model_and_tokenizer

    initial, _ = load_model_and_tokenizer("tiny://arithmetic")
    step1 = trainable(tmp_path / "run" / "checkpoints" / "step_0000001")
    for name, p in initial.named_parameters():  # pretraining + warm-up step: the actor never moved
        torch.testing.assert_close(step1[name], p.detach(), rtol=0, atol=0)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_0000002" / "state.pt", weights_only=True)
    assert json.loads(state["train_state"]["history"])["critic_pretrain"]["steps"] == 2
    assert set(state["updater"]) >= {"policy", "critic"}        # the critic's optimizer is checkpointed
    assert (tmp_path / "run" / "checkpoints" / "step_0000002" / "critic.safetensors").exists()


@pytest.mark.parametrize("raw, match", [
    ({"algorithm": {"advantage": "gae"}}, "add a critic: section"),
    ({"critic": {"lr": 1e-4}}, "uses no critic"),
    ({"algorithm": {"lambda_actor": 0.9}}, "lambda_actor set but 'grpo'"),
    ({"algorithm": {"advantage": "grpo", "kl_reward_coef": 0.1}}, "kl_reward_coef set but 'grpo'"),
    ({"algorithm": {"advantage": "reinforce_pp_baseline", "token_weighting": {"type": "thr"}}}, "per-token advantages"),
    ({"algorithm": {"advantage": "gae"}, "critic": {"warmup_steps": 100}}, "critic.warmup_steps"),
    ({"algorithm": {"advantage": "reinforce_pp", "kl_reward_target": 0.1}}, "kl_reward_target"),
    ({"algorithm": {"advantage": "gae"}, "critic": {"value_clip": -1}}, "critic.value_clip"),
])
def test_recipe_rules_name_the_key(raw, match):
    with pytest.raises(ValueError, match=match):
        validate_recipe(raw)


def test_reinforce_pp_with_adaptive_kl_in_the_reward(tmp_path):
    raw = recipe(tmp_path, algorithm={"advantage": "reinforce_pp", "kl_reward_coef": 0.05, "kl_reward_target": 0.01,
                                      "kl_reward_horizon": 100, "gamma": 0.99},
                 trainer={"steps": 3, "eval_every": 0, "checkpoint_every": 0})
    train(validate_recipe(raw))
    rows = [r for r in metrics(tmp_path / "run") if "reward/mean" in r]
    assert rows[0]["kl_reward/coef"] == 0.05
    kl = [r["kl_reward/mean"] for r in rows]
    assert kl[0] == pytest.approx(0.0, abs=1e-6)    # step 1: the policy is still the reference
    assert kl[1] > 0                                   # it moved away from it after one update
    # e = clip(kl/target - 1, -.2, .2); coef * (1 + e * 32 / 100)
    e = max(min(kl[1] / 0.01 - 1, 0.2), -0.2)
    assert rows[2]["kl_reward/coef"] == pytest.approx(rows[1]["kl_reward/coef"] * (1 + e * 32 / 100), rel=1e-4)
    assert rows[2]["kl_reward/coef"] != rows[1]["kl_reward/coef"]


@pytest.mark.slow   # two 8-step runs and a killed one: ~25 s idle, 60 s on a loaded 2-core machine
def test_kill9_then_resume_with_a_critic_equals_the_uninterrupted_run(tmp_path):
    slow = {**PPO, "rewards": [{"name": "reward_fixtures:slow_length_reward"}],
            "trainer": {"steps": 8, "eval_every": 0, "checkpoint_every": 2, "num_threads": 1}}
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    ref_dir.mkdir()
    cut_dir.mkdir()
    train(validate_recipe(recipe(ref_dir, **slow)))
    path = tmp_path / "cut.yaml"
    path.write_text(yaml.safe_dump(recipe(cut_dir, **slow)))
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cmd = [sys.executable, "-m", "llmrl.cli", "train", str(path)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt4 = cut_dir / "run" / "checkpoints" / "step_0000004"
    deadline = time.time() + 120
    while not ckpt4.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert ckpt4.exists(), proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut_dir / "run" / "final").exists(), "the run finished before it was killed"
    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((cut_dir / "run" / "summary.json").read_text())
    assert summary["resumed_from"] == [4] and summary["steps_this_session"] == 4   # not a restart from 0
    ref_rows, cut_rows = comparable(metrics(ref_dir / "run")), comparable(metrics(cut_dir / "run"))
    assert [r["step"] for r in cut_rows] == [r["step"] for r in ref_rows]
    for a, b in zip(ref_rows, cut_rows):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), (a["step"], k)
    from safetensors.torch import load_file

    last = "checkpoints/step_0000008"
    for f in ("trainable.safetensors", "critic.safetensors"):
        w_ref, w_cut = load_file(str(ref_dir / "run" / last / f)), load_file(str(cut_dir / "run" / last / f))
        for k in w_ref:
            torch.testing.assert_close(w_ref[k], w_cut[k], rtol=1e-5, atol=1e-6)
