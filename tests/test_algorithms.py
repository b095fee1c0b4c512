"""Advantage estimators and losses, with expected values worked out by hand."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.algorithms.advantages import compute_advantages, grpo_advantages, rloo_advantages, zero_variance_groups
from llmrl.algorithms.losses import aggregate, clipped_surrogate, importance_log_ratio, kl_penalty, policy_loss


def test_grpo_hand_values():
    # group [1, 0, 0, 0]: mean .25, unbiased std = sqrt((.75^2 + 3 * .25^2) / 3) = sqrt(.25) = .5
    adv = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0)
    assert torch.allclose(adv, torch.tensor([1.5, -0.5, -0.5, -0.5]))


def test_dr_grpo_is_centred_only():
    adv = compute_advantages("dr_grpo", torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    assert torch.allclose(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_rloo_hand_values():
    # r = [3, 1, 2]: baselines (1+2)/2 = 1.5, (3+2)/2 = 2.5, (3+1)/2 = 2
    adv = rloo_advantages(torch.tensor([3.0, 1.0, 2.0]), 3)
    assert torch.allclose(adv, torch.tensor([1.5, -1.5, 0.0]))


def test_zero_variance_groups():
    flat = zero_variance_groups(torch.tensor([1.0, 1.0, 0.0, 1.0]), 2)
    assert flat.tolist() == [True, False]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=8, max_size=8), st.sampled_from(["grpo", "dr_grpo", "rloo"]))
def test_group_advantages_have_zero_mean(values, name):
    adv = compute_advantages(name, torch.tensor(values), 4).view(2, 4)
    assert torch.allclose(adv.mean(1), torch.zeros(2), atol=1e-4)


def test_aggregation_modes_hand_values():
    loss = torch.tensor([[1.0, 3.0, 5.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # token-mean: (1 + 3 + 2) / 3 = 2; seq-mean-token-mean: ((1+3)/2 + 2/1) / 2 = 2;
    # seq-mean-token-sum-norm with max_len 4: (1 + 3 + 2) / (2 * 4) = 0.75
    assert aggregate(loss, mask, "token-mean").item() == pytest.approx(2.0)
    assert aggregate(loss, mask, "seq-mean-token-mean").item() == pytest.approx(2.0)
    assert aggregate(loss, mask, "seq-mean-token-sum-norm", max_len=4).item() == pytest.approx(0.75)


def test_micro_batch_normalisation_equals_full_batch():
    torch.manual_seed(0)
    loss, mask = torch.rand(6, 5), (torch.rand(6, 5) > 0.3).long()
    for mode in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"):
        full = aggregate(loss, mask, mode, max_len=5)
        parts = sum(aggregate(loss[i:i + 2], mask[i:i + 2], mode, num_seqs=6, num_tokens=float(mask.sum()), max_len=5)
                    for i in range(0, 6, 2))
        assert parts.item() == pytest.approx(full.item(), rel=1e-6)


def test_clip_higher_is_asymmetric():
    # ratio e^0.3 = 1.35: with A > 0 the objective is capped at (1 + eps_high) * A
    lr = torch.full((1, 1), 0.3)
    loss, clipped = clipped_surrogate(lr, torch.ones(1, 1), clip_eps_low=0.2, clip_eps_high=0.28)
    assert loss.item() == pytest.approx(-1.28) and clipped.item()
    # ratio e^-0.3 = 0.741 with A < 0: min(0.741 * -1, 0.8 * -1) = -0.8 -> loss 0.8 (lower clip)
    loss, _ = clipped_surrogate(-lr, -torch.ones(1, 1), clip_eps_low=0.2, clip_eps_high=0.28)
    assert loss.item() == pytest.approx(0.8)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]))
def test_ratio_one_and_zero_advantage_give_zero_loss(n, t, mode):
    logps = torch.randn(n, t)
    loss, _ = policy_loss(logps, logps.clone(), torch.zeros(n), torch.ones(n, t), loss_agg=mode, max_len=t)
    assert loss.item() == 0.0


def test_gspo_sequence_ratio_and_token_gradient():
    logps = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 0]])
    # sequence log-ratio over the 2 masked tokens: (0.5 + 0) / 2 = 0.25
    seq = importance_log_ratio(logps, old, mask, "gspo")
    assert torch.allclose(seq, torch.full((1, 3), 0.25))
    tok = importance_log_ratio(logps, old, mask, "gspo_token")
    assert torch.allclose(tok, seq)  # same value ...
    tok[0, 1].backward()  # ... but the gradient flows to token 1 only
    assert logps.grad.tolist() == [[0.0, 1.0, 0.0]]


def test_kl_estimators_hand_values():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    d = math.log(0.25) - math.log(0.5)  # = -log 2
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    assert kl_penalty(logp, ref, "k2").item() == pytest.approx(0.5 * math.log(2) ** 2)
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(math.exp(d) - d - 1)  # 0.5 - 1 + log 2
