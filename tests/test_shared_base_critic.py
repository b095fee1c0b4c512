"""critic.share_base: the critic as a second LoRA adapter + value head on the policy's frozen base.
Each loss reaches only its own parameters, the base is one copy, checkpoints hold each side once."""
from __future__ import annotations

import pytest
import torch

from llmrl.config.load import validate_recipe
from llmrl.models.load import load_model_and_tokenizer
from llmrl.trainer import checkpoint as ckpt
from llmrl.trainer.critic import CRITIC_ADAPTER, SharedBaseCritic, critic_values
from llmrl.trainer.forward import forward_completions

from test_ppo import _batch
from test_trainer import recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Lora:
    r, alpha, dropout, target_modules = 4, 8, 0.0, None


def _pair():
    torch.manual_seed(0)
    policy, _ = load_model_and_tokenizer("tiny://arithmetic", lora_r=4, lora_alpha=8)
    return policy, SharedBaseCritic(policy, _Lora)


def test_each_loss_reaches_only_its_own_parameters_and_the_base_is_one_copy():
    policy, critic = _pair()
    batch, rows = _batch(), torch.arange(6)
    own = {id(p) for p in critic.parameters()}
    policy_adapter = [p for n, p in policy.named_parameters() if "lora_" in n and id(p) not in own]
    base = [p for n, p in policy.named_parameters() if "lora_" not in n]
    assert policy_adapter and base and all(not p.requires_grad for p in base)
    with torch.no_grad():   # B != 0, so each adapter changes its forward
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    critic_values(critic, batch, rows).pow(2).sum().backward()
    assert all(p.grad is None for p in policy_adapter + base)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in critic.parameters())
    for p in critic.parameters():
        p.grad = None
    forward_completions(policy, batch, rows, temperature=1.0).logps.sum().backward()
    assert all(p.grad is None for p in critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy_adapter)
    assert policy.active_adapter == "default" and all(p.requires_grad for p in critic.parameters())
    # one base: every parameter of both sides is one storage; the critic adds adapters + head only
    base_numel = sum(p.numel() for p in base)
    both = {p.data_ptr(): p.numel() for p in [*policy.parameters(), *critic.parameters()]}
    assert sum(both.values()) < 1.2 * base_numel
    # the critic's values come from its adapter: zeroing the policy adapter's B leaves them unchanged
    v = critic_values(critic, batch, rows).detach()
    with torch.no_grad():
        for p in policy_adapter:
            p.zero_()
    torch.testing.assert_close(critic_values(critic, batch, rows).detach(), v, rtol=0, atol=0)


def test_checkpoint_holds_each_adapter_once():
    policy, critic = _pair()
    pol, cri = ckpt.trainable_state(policy), ckpt.trainable_state(critic)
    assert pol and not any(CRITIC_ADAPTER in k.split(".") for k in pol)
    assert {"score.weight", "score.bias"} <= set(cri) and any(CRITIC_ADAPTER in k.split(".") for k in cri)
    assert not set(pol) & set(cri)
    ckpt.load_trainable(critic, {k: torch.ones_like(v) for k, v in cri.items()})
    assert all((p == 1).all() for p in critic.parameters())


def test_share_base_trains_and_leaves_the_base_alone(tmp_path):
    from test_ppo import PPO
    from test_trainer import metrics
    from llmrl.trainer.loop import train

    raw = recipe(tmp_path, **PPO, model={"name_or_path": "tiny://arithmetic", "lora": {"r": 4, "alpha": 8}},
                 trainer={"steps": 2, "eval_every": 0, "checkpoint_every": 1})
    raw["critic"].update({"share_base": True, "warmup_steps": 1})
    train(validate_recipe(raw))
    rows = [r for r in metrics(tmp_path / "run") if "reward/mean" in r]
    assert rows[0]["loss/grad_norm"] == 0.0 and rows[0]["loss/critic_grad_norm"] > 0   # warm-up: critic only
    assert rows[1]["loss/grad_norm"] > 0
    step1 = tmp_path / "run" / "checkpoints" / "step_0000001"
    weights, state = ckpt.read_checkpoint(step1)
    assert all(torch.count_nonzero(v) == 0 for k, v in weights.items() if "lora_B" in k)  # actor frozen in step 1
    assert any(torch.count_nonzero(v) for k, v in state["critic_weights"].items() if "lora_B" in k)
    assert not (tmp_path / "run" / "final" / CRITIC_ADAPTER).exists()   # the final policy holds its adapter only


@pytest.mark.parametrize("extra, match", [
    ({}, "critic.share_base: true needs model.lora"),
    ({"model": "tiny://arithmetic"}, "critic.model"),
])
def test_share_base_rules_name_the_key(tmp_path, extra, match):
    raw = recipe(tmp_path, algorithm={"advantage": "gae"}, critic={"lr": 1e-3, "share_base": True, **extra})
    if "model" in extra:
        raw["model"] = {**raw.get("model", {}), "lora": {"r": 4}}
    with pytest.raises(ValueError, match=match):
        validate_recipe(raw)
