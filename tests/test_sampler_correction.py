"""Truncated importance sampling of the sampler/trainer mismatch (llmrl.algorithms.sampler_correction):
the weight is min(pi_old / pi_sampler, C) on a hand batch; a sampler that equals the trainer
leaves the update bit-identical to no correction; the cap clips; the recipe keys are validated
at load and the correction is on by default only for engines other than hf."""
from __future__ import annotations

import math

import pytest
import torch

from llmrl.algorithms.losses import policy_loss
from llmrl.algorithms.sampler_correction import correction_enabled, tis_weights
from llmrl.config.load import RecipeError, validate_recipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_weight_is_the_truncated_ratio_on_a_hand_batch():
    old = torch.tensor([[-1.0, -2.0, -0.5, -1.0], [-3.0, -0.1, -1.0, -1.0]])
    sampler = torch.tensor([[-1.5, -2.0, -2.5, math.nan], [-2.0, -0.1, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    w, stats = tis_weights(old, sampler, mask, cap=2.0)
    # row 0: e^0.5 = 1.6487, e^0 = 1, e^2 = 7.389 -> capped at 2, NaN sampler log-prob -> 1
    # row 1: e^-1 = 0.3679, 1, then two tokens off the mask -> 1
    expected = torch.tensor([[math.exp(0.5), 1.0, 2.0, 1.0], [math.exp(-1.0), 1.0, 1.0, 1.0]])
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-6)
    # 5 scored tokens: |diff| = .5, 0, 2, 1, 0 -> mean 0.7; ratios 1.6487 + 1 + 7.389 + .3679 + 1 -> mean 2.281;
    # one of five above the cap
    assert stats["sampler/logp_diff_abs_mean"].item() == pytest.approx(0.7)
    assert stats["sampler/is_ratio_mean"].item() == pytest.approx((math.exp(.5) + 1 + math.exp(2) + math.exp(-1) + 1) / 5)
    assert stats["sampler/is_clipped_frac"].item() == pytest.approx(0.2)


def test_the_cap_clips_the_token_gradient():
    """A token 5 nats likelier under the trainer than under the sampler: its policy-gradient term is
    multiplied by the cap (3), not by e^5 = 148; the other token keeps weight 1."""
    old = torch.tensor([[-1.0, -2.0]])
    sampler = torch.tensor([[-6.0, -2.0]])
    mask = torch.ones(1, 2)
    adv = torch.tensor([[1.0, 1.0]])

    def grads(weights):
        logps = old.clone().requires_grad_(True)
        loss, _ = policy_loss(logps, old, adv, mask, token_weights=weights)
        loss.backward()
        return logps.grad

    w, stats = tis_weights(old, sampler, mask, cap=3.0)
    assert w.tolist() == [[3.0, 1.0]] and stats["sampler/is_clipped_frac"].item() == 0.5
    plain, weighted = grads(None), grads(w)
    torch.testing.assert_close(weighted, plain * torch.tensor([[3.0, 1.0]]))
    assert plain.abs().min() > 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from llmrl.models.tiny import build_char_tokenizer, build_tiny_model
    from llmrl.rollout.hf_engine import HFEngine
    from llmrl.rollout.types import SamplingParams

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2, num_heads=4)
    model = AutoModelForCausalLM.from_pretrained(str(path))
    engine = HFEngine(model, build_char_tokenizer(), max_prompt_length=32)
    torch.manual_seed(0)
    batch = engine.generate(["1+2=", "13-4=", "7+7="], SamplingParams(max_new_tokens=6, logprobs=True), n=4)
    return model, batch


def _update(model, batch, *, old, tis_cap):
    """One GRPO update (SGD, two micro-batches) from the given start; returns the parameters after it."""
    from llmrl.algorithms.advantages import estimate
    from llmrl.trainer.step import Forwards, token_advantages, update_policy
    from llmrl.trainer.token_weighting import TokenWeighting
    from llmrl.trainer.updater import ParamSet, Updater, build_optimizer

    cfg = validate_recipe({"rewards": [{"name": "reward_fixtures:length_reward"}], "rollout": {"num_generations": 4}})
    params = list(model.parameters())
    updater = Updater(ParamSet(params, build_optimizer("SGD", params, lr=0.5)), micro_batch_size=6)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.2, 0.9, 0.1, 0.0, 1.0, 1.0, 0.0, 0.3])
    adv = estimate("grpo", rewards, batch.loss_mask, group_size=4)
    tok_adv = token_advantages(TokenWeighting(cfg.algorithm.token_weighting, total_steps=1), adv, rewards, batch, 1,
                               fused=False)
    stats = update_policy(updater, model, batch, Forwards(old_logps=old), tok_adv, cfg.algorithm, temperature=1.0,
                          max_len=6, step=1, tis_cap=tis_cap)
    return [p.detach().clone() for p in model.parameters()], stats


def test_a_sampler_equal_to_the_trainer_leaves_the_update_bit_identical(tiny):
    from llmrl.trainer.forward import forward_completions

    model, batch = tiny
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        old = forward_completions(model, batch, torch.arange(len(batch)), temperature=1.0).logps.float()
    old = torch.where(batch.loss_mask.bool(), old - 0.05, old)    # pi_old != pi: the ratio is not 1 either
    equal = batch.select(torch.arange(len(batch)))
    equal.sampler_logps = torch.where(batch.loss_mask.bool(), old, torch.full_like(old, math.nan))

    def run(b, cap):
        with torch.no_grad():
            for p, s in zip(model.parameters(), start):
                p.copy_(s)
        torch.manual_seed(1)   # the same minibatch order (randperm) in every run
        return _update(model, b, old=old, tis_cap=cap)

    plain, _ = run(equal, None)
    corrected, stats = run(equal, 2.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, corrected))
    assert stats["sampler/logp_diff_abs_mean"] == 0.0 and stats["sampler/is_clipped_frac"] == 0.0
    assert any(not torch.equal(a, s) for a, s in zip(plain, start))      # the update did move the weights
    # A sampler that differs: the same update is no longer identical, and the mismatch is logged.
    shifted = batch.select(torch.arange(len(batch)))
    shifted.sampler_logps = equal.sampler_logps - 0.3
    moved, stats = run(shifted, 2.0)
    assert not all(torch.equal(a, b) for a, b in zip(plain, moved))
    assert stats["sampler/logp_diff_abs_mean"] == pytest.approx(0.3, abs=1e-5)


def test_keys_are_validated_at_load_and_the_default_depends_on_the_engine():
    base = {"rewards": [{"name": "reward_fixtures:length_reward"}]}
    with pytest.raises(RecipeError, match="algorithm.sampler_correction_cap"):
        validate_recipe({**base, "algorithm": {"sampler_correction_cap": 0.5}})
    cfg = validate_recipe({**base, "algorithm": {"vllm_importance_sampling_cap": 3.0}})   # TRL's name
    assert cfg.algorithm.sampler_correction_cap == 3.0 and cfg.algorithm.sampler_correction is None
    assert correction_enabled(None, "vllm") and not correction_enabled(None, "hf")
    assert correction_enabled(None, "my_pkg.engines:remote")             # any engine with its own weights
    assert not correction_enabled(False, "vllm") and correction_enabled(True, "hf")
