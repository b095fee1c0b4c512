"""Token-level estimators (GAE, discounted returns, REINFORCE++ and its baseline variant), batch
whitening, the clipped value loss and explained variance: hand-worked values and a float64
reference written as plain loops over each row's policy tokens."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrl.algorithms.advantages import (TokenParams, discounted_returns, estimate, gae, masked_whiten,
                                         token_rewards)
from llmrl.algorithms.losses import explained_variance, value_loss


# ------------------------------------------------------------------ float64 reference (plain loops)
def ref_gae(rewards, values, mask, gamma, lam):
    """A_t over the policy tokens of each row, walking backwards; non-policy positions are skipped
    entirely (their reward and value are never read) and get 0."""
    out = [[0.0] * len(r) for r in rewards]
    for i, (r, v, m) in enumerate(zip(rewards, values, mask)):
        pos = [t for t, x in enumerate(m) if x]
        a_next, v_next = 0.0, 0.0
        for t in reversed(pos):
            delta = r[t] + gamma * v_next - v[t]
            a_next = delta + gamma * lam * a_next
            v_next = v[t]
            out[i][t] = a_next
    return out


def ref_whiten(x, mask):
    vals = [v for row, m in zip(x, mask) for v, k in zip(row, m) if k]
    mean = sum(vals) / len(vals)
    std = math.sqrt(max(sum((v - mean) ** 2 for v in vals) / len(vals), 1e-8))
    return [[(v - mean) / std if k else 0.0 for v, k in zip(row, m)] for row, m in zip(x, mask)]


def ref_token_rewards(rewards, mask, kl=None, kl_coef=0.0):
    out = []
    for i, m in enumerate(mask):
        row = [(-kl_coef * kl[i][t] if kl is not None else 0.0) if k else 0.0 for t, k in enumerate(m)]
        pos = [t for t, k in enumerate(m) if k]
        if pos:
            row[pos[-1]] += rewards[i]
        out.append(row)
    return out


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


# ------------------------------------------------------------------ GAE
def test_gae_hand_values_with_env_token_in_the_middle_and_padding():
    # owners: policy, ENV (tool result), policy, policy, PAD; reward 1 on index 3 (last policy token)
    mask = torch.tensor([[1, 0, 1, 1, 0]])
    values = t64([[0.5, 9.0, 0.2, 0.4, 9.0]])      # 9s are never read: env and pad carry no value
    r = token_rewards(t64([1.0]), mask)
    assert r.tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]
    # gamma .9, lam .8 (gamma * lam = .72):
    # t3: delta = 1 + .9 * 0 - .4 = .6                A3 = .6
    # t2: delta = 0 + .9 * .4 - .2 = .16              A2 = .16 + .72 * .6 = .592
    # t0: delta = 0 + .9 * .2 - .5 = -.32 (skips t1)  A0 = -.32 + .72 * .592 = .10624
    adv = gae(r, values, mask, gamma=0.9, lam=0.8)
    assert adv[0].tolist() == pytest.approx([0.10624, 0.0, 0.592, 0.6, 0.0], abs=1e-12)
    # lam 1, gamma 1: A_t = G_t - V_t = 1 - V_t on every policy token
    assert gae(r, values, mask, gamma=1.0, lam=1.0)[0].tolist() == pytest.approx([0.5, 0.0, 0.8, 0.6, 0.0])
    # returns with gamma .5: G3 = 1, G2 = .5, G0 = .25 (the env token does not count as a step)
    assert discounted_returns(r, mask, gamma=0.5)[0].tolist() == pytest.approx([0.25, 0.0, 0.5, 1.0, 0.0])


def _random_case(seed, n=5, c=9):
    g = torch.Generator().manual_seed(seed)
    owner = torch.randint(0, 3, (n, c), generator=g)          # 0 policy, 1 env, 2 pad-like
    mask = (owner == 0).long()
    mask[0] = 0                                                # a row with no policy token at all
    lengths = torch.randint(1, c + 1, (n,), generator=g)
    mask = mask * (torch.arange(c) < lengths.unsqueeze(1))     # right padding
    values = torch.randn(n, c, generator=g, dtype=torch.float64)
    rewards = torch.randn(n, generator=g, dtype=torch.float64)
    kl = torch.randn(n, c, generator=g, dtype=torch.float64) * 0.3
    return rewards, values, mask, kl


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.5, 1.0), st.floats(0.0, 1.0))
def test_gae_equals_the_float64_reference(seed, gamma, lam):
    rewards, values, mask, kl = _random_case(seed)
    r = token_rewards(rewards, mask, kl=kl, kl_coef=0.1)
    expect_r = ref_token_rewards(rewards.tolist(), mask.tolist(), kl.tolist(), 0.1)
    assert torch.allclose(r, t64(expect_r), atol=1e-12)
    got = gae(r, values, mask, gamma=gamma, lam=lam)
    assert torch.allclose(got, t64(ref_gae(expect_r, values.tolist(), mask.tolist(), gamma, lam)), atol=1e-10)
    ret = discounted_returns(r, mask, gamma=gamma)
    assert torch.allclose(ret, t64(ref_gae(expect_r, [[0.0] * mask.shape[1]] * len(mask), mask.tolist(), gamma, 1.0)),
                          atol=1e-10)


def test_env_tokens_are_transparent():
    # The same completion with its tool-result tokens removed gives the same advantages on the
    # policy tokens: env tokens add no step, no reward and no value.
    mask = torch.tensor([[1, 1, 0, 0, 1, 0, 1, 1]])
    values = t64([[0.1, 0.3, 5.0, -5.0, 0.7, 3.0, 0.2, 0.9]])
    r = token_rewards(t64([2.0]), mask)
    full = gae(r, values, mask, gamma=0.95, lam=0.9)
    keep = mask[0].bool()
    compact = gae(r[:, keep], values[:, keep], torch.ones(1, int(keep.sum()), dtype=torch.long), gamma=0.95, lam=0.9)
    assert torch.allclose(full[:, keep], compact) and (full[:, ~keep] == 0).all()


# ------------------------------------------------------------------ whitening over the whole batch
def test_whitening_is_over_all_policy_tokens_of_the_batch():
    rewards, values, mask, _ = _random_case(3)
    x = torch.randn(mask.shape, dtype=torch.float64)
    w = masked_whiten(x, mask)
    assert torch.allclose(w, t64(ref_whiten(x.tolist(), mask.tolist())), atol=1e-10)
    m = mask.bool()
    assert w[m].mean().abs() < 1e-10 and (w[m].var(unbiased=False) - 1).abs() < 1e-10 and (w[~m] == 0).all()
    # not per row: rows keep different means
    row_means = torch.stack([w[i][m[i]].mean() for i in range(len(w)) if m[i].any()])
    assert row_means.std() > 0.1


def test_gae_estimator_whitens_actor_advantages_and_returns_critic_targets():
    rewards, values, mask, kl = _random_case(7)
    p = TokenParams(gamma=0.99, lambda_actor=0.95, lambda_critic=1.0)
    adv = estimate("gae", rewards, mask, group_size=1, values=values, params=p)
    r = ref_token_rewards(rewards.tolist(), mask.tolist())
    expect_adv = ref_whiten(ref_gae(r, values.tolist(), mask.tolist(), 0.99, 0.95), mask.tolist())
    assert torch.allclose(adv.tokens, t64(expect_adv), atol=1e-10)
    expect_ret = t64(ref_gae(r, values.tolist(), mask.tolist(), 0.99, 1.0)) + values * mask
    assert torch.allclose(adv.returns, expect_ret, atol=1e-10)
    assert adv.response is None
    with pytest.raises(ValueError, match="needs critic values"):
        estimate("gae", rewards, mask, group_size=1)


# ------------------------------------------------------------------ REINFORCE++
def test_reinforce_pp_hand_values():
    # rewards [1, 0, 1, 1], 2 groups of 2, each completion 2 policy tokens, gamma 1, no KL.
    rewards, mask = t64([1.0, 0.0, 1.0, 1.0]), torch.ones(4, 2, dtype=torch.long)
    # reinforce_pp: returns [1,1],[0,0],[1,1],[1,1]; batch mean .75, population std sqrt(.1875) = .4330
    a = estimate("reinforce_pp", rewards, mask, group_size=2).tokens
    assert a[:, 0].tolist() == pytest.approx([0.57735, -1.73205, 0.57735, 0.57735], abs=1e-5)
    # baseline: r - group mean = [.5, -.5, 0, 0]; batch mean 0, std sqrt(.125) = .35355
    b = estimate("reinforce_pp_baseline", rewards, mask, group_size=2).tokens
    assert b[:, 1].tolist() == pytest.approx([1.41421, -1.41421, 0.0, 0.0], abs=1e-5)


def test_reinforce_pp_with_token_kl_equals_the_reference():
    rewards, _, mask, _ = _random_case(11, n=6)
    g = torch.Generator().manual_seed(1)
    old, ref = torch.randn(mask.shape, generator=g, dtype=torch.float64), torch.randn(mask.shape, generator=g,
                                                                                      dtype=torch.float64)
    kl = (old - ref).tolist()
    p = TokenParams(gamma=0.9, kl_coef=0.05)
    zeros = [[0.0] * mask.shape[1]] * len(mask)
    # 1. reinforce_pp: k1 KL in the reward, discounted return with gamma .9, batch whitening
    got = estimate("reinforce_pp", rewards, mask, group_size=2, old_logps=old, ref_logps=ref, params=p).tokens
    r = ref_token_rewards(rewards.tolist(), mask.tolist(), kl, 0.05)
    assert torch.allclose(got, t64(ref_whiten(ref_gae(r, zeros, mask.tolist(), 0.9, 1.0), mask.tolist())), atol=1e-10)
    # 2. baseline: group mean off the rewards first, gamma forced to 1
    got = estimate("reinforce_pp_baseline", rewards, mask, group_size=2, old_logps=old, ref_logps=ref, params=p).tokens
    rl = rewards.tolist()
    centred = [x - (rl[2 * (i // 2)] + rl[2 * (i // 2) + 1]) / 2 for i, x in enumerate(rl)]
    r = ref_token_rewards(centred, mask.tolist(), kl, 0.05)
    assert torch.allclose(got, t64(ref_whiten(ref_gae(r, zeros, mask.tolist(), 1.0, 1.0), mask.tolist())), atol=1e-10)
    with pytest.raises(ValueError, match="old and reference log-probs"):
        estimate("reinforce_pp", rewards, mask, group_size=2, params=p)
    with pytest.raises(ValueError, match="kl_reward_coef"):
        estimate("grpo", rewards, mask, group_size=2, old_logps=old, ref_logps=ref, params=p)


# ------------------------------------------------------------------ value loss and explained variance
def test_value_clipping_matches_the_formula():
    values, old, returns = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.2]]), torch.tensor([[2.0, 0.5]])
    mask = torch.ones(1, 2)
    # t0: V - old = 1 clipped to .5 -> V_clip .5; (V-R)^2 = 1, (V_clip-R)^2 = 2.25 -> 2.25 (clipped term)
    # t1: V - old = .8 -> V_clip .7; (V-R)^2 = .25, (V_clip-R)^2 = .04 -> .25
    loss, st_ = value_loss(values, old, returns, mask, clip=0.5, num_tokens=2)
    assert loss.item() == pytest.approx(0.5 * (2.25 + 0.25) / 2) and st_["value_clipfrac"].item() == 0.5
    loss, st_ = value_loss(values, old, returns, mask, clip=None, num_tokens=2)
    assert loss.item() == pytest.approx(0.5 * (1.0 + 0.25) / 2) and st_["value_clipfrac"].item() == 0.0
    # micro-batches normalised by the minibatch's token count sum to the whole minibatch's loss
    halves = sum(value_loss(values[:, i:i + 1], old[:, i:i + 1], returns[:, i:i + 1], mask[:, i:i + 1], clip=0.5,
                            num_tokens=2)[0] for i in range(2))
    assert halves.item() == pytest.approx(0.625)


def test_explained_variance_is_over_the_whole_batch():
    g = torch.Generator().manual_seed(0)
    returns = torch.randn(8, 5, generator=g)
    values = returns + 0.5 * torch.randn(8, 5, generator=g)
    mask = (torch.rand(8, 5, generator=g) > 0.3).long()
    m = mask.bool()
    r, v = returns[m].double(), values[m].double()
    expect = 1 - ((r - v) - (r - v).mean()).pow(2).mean() / (r - r.mean()).pow(2).mean()
    assert explained_variance(values, returns, mask) == pytest.approx(expect.item(), abs=1e-12)
    per_micro = sum(explained_variance(values[i:i + 2], returns[i:i + 2], mask[i:i + 2]) for i in range(0, 8, 2)) / 4
    assert per_micro != pytest.approx(expect.item(), abs=1e-3)   # why the batch figure is the one logged
    assert math.isnan(explained_variance(values, torch.ones(8, 5), mask))
