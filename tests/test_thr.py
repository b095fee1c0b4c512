"""Token Hidden Reward (docs/thr.md): scores, reweighting, collector, model facts.

Reference values come from (a) literal double sums of the spec's definition, (b) autograd on a
tiny Llama's lm_head weight, (c) small cases derived by hand in comments.
"""
from __future__ import annotations

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, LlamaForCausalLM

import llmrl.algorithms.thr as thr_mod
from llmrl.algorithms.thr import (
    ThrCollector,
    ThrScores,
    correct_mask,
    group_vocab,
    steering_p,
    thr_token_advantages,
    token_hidden_reward,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def tiny_llama(*, tie: bool = False, vocab: int = 16, hidden: int = 8, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(cfg).eval()


def rollout(model: LlamaForCausalLM, *, n_prompts: int, group: int, prompt_len: int, t: int, seed: int):
    """Sample completions from the model itself; returns seq [N, P+T], completions [N, T], group ids [N]."""
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    seq = torch.randint(0, vocab, (n_prompts, prompt_len), generator=g).repeat_interleave(group, 0)
    with torch.no_grad():
        for _ in range(t):
            probs = model(input_ids=seq).logits[:, -1].softmax(-1)
            seq = torch.cat([seq, torch.multinomial(probs, 1, generator=g)], 1)
    return seq, seq[:, prompt_len:], torch.arange(n_prompts).repeat_interleave(group)


def old_forward(model, seq: torch.Tensor, attn: torch.Tensor, prompt_len: int, temperature: float = 1.0):
    """What the trainer does: logits / temperature and hidden_states[-1], both sliced [:, P-1:-1]."""
    out = model(input_ids=seq, attention_mask=attn, output_hidden_states=True)
    logits = out.logits[:, prompt_len - 1 : -1] / temperature  # [N, T, V]
    hidden = out.hidden_states[-1][:, prompt_len - 1 : -1]  # [N, T, d]
    return logits, hidden


def brute_force_s(hidden, probs, index, mask, correct, group_ids, *, len_norm=False, exclude_self=False):
    """The spec's definition as a literal double sum, in float64:
    s_{j,k} = sum_{i in P} sum_{k'} <g_{i,k'}, g_{j,k}> <h_{i,k'}, h_{j,k}>."""
    n, t, k = probs.shape
    h = hidden.double()
    g = -probs.double()
    for j in range(n):
        for kk in range(t):
            if mask[j, kk]:
                g[j, kk, index[j, kk]] += 1.0
    s = torch.zeros(n, t, dtype=torch.float64)
    for j in range(n):
        rows = [i for i in range(n) if group_ids[i] == group_ids[j]]
        anchors = [i for i in rows if correct[i]]
        if not anchors or len(anchors) == len(rows):
            continue
        for kk in range(t):
            if not mask[j, kk]:
                continue
            tot = 0.0
            for i in anchors:
                if exclude_self and i == j:
                    continue
                for k2 in range(t):
                    if mask[i, k2]:
                        tot += float(g[i, k2] @ g[j, kk]) * float(h[i, k2] @ h[j, kk])
            if len_norm:
                tot /= float(mask[j].sum())
            s[j, kk] = tot
    return s


def random_batch(seed: int, *, n: int = 6, t: int = 4, d: int = 3, k: int = 5, n_groups: int = 2):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, t, d, generator=g)
    probs = torch.rand(n, t, k, generator=g)
    probs = probs / probs.sum(-1, keepdim=True) * 0.9  # restricted to V*: mass < 1, not renormalised
    index = torch.randint(0, k, (n, t), generator=g)
    mask = (torch.rand(n, t, generator=g) < 0.8).float()
    mask[:, 0] = 1.0
    group_ids = torch.randint(0, n_groups, (n,), generator=g) * 7 + 3  # arbitrary labels
    correct = torch.rand(n, generator=g) < 0.5
    adv = torch.randn(n, generator=g)
    return hidden, probs, index, mask, adv, correct, group_ids


# ---------------------------------------------------------------------------------------------
# docstring examples run
# ---------------------------------------------------------------------------------------------
def test_doctests():
    import llmrl.algorithms.thr_html as thr_html_mod

    for mod, n in ((thr_mod, 7), (thr_html_mod, 1)):
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert res.attempted >= n and res.failed == 0


# ---------------------------------------------------------------------------------------------
# A. matrix form == definition
# ---------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), len_norm=st.booleans(), exclude_self=st.booleans(),
       n=st.integers(2, 7), n_groups=st.integers(1, 3))
def test_matrix_form_equals_double_sum(seed, len_norm, exclude_self, n, n_groups):
    hidden, probs, index, mask, adv, correct, gid = random_batch(seed, n=n, n_groups=n_groups)
    sc = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid, len_norm=len_norm, exclude_self=exclude_self)
    ref = brute_force_s(hidden, probs, index, mask, correct, gid, len_norm=len_norm, exclude_self=exclude_self)
    torch.testing.assert_close(sc.s.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sc.thr.double(), adv.double()[:, None] * ref, rtol=1e-5, atol=1e-5)
    assert sc.s.dtype == torch.float32 and sc.thr.dtype == torch.float32
    assert bool((sc.s[mask == 0] == 0).all())


def test_hand_example_two_groups():
    # Group 0 = the docstring case: s = (.5, -1), THR = (.5, 1). Group 1 has both responses correct,
    # so it carries no THR even though its tokens would have nonzero s.
    hidden = torch.tensor([[[1.0]], [[2.0]], [[1.0]], [[1.0]]])
    probs = torch.full((4, 1, 2), 0.5)
    index = torch.tensor([[0], [1], [0], [1]])
    mask = torch.ones(4, 1)
    adv = torch.tensor([1.0, -1.0, 0.5, 0.5])
    correct = torch.tensor([True, False, True, True])
    gid = torch.tensor([0, 0, 1, 1])
    sc = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid)
    assert sc.s.tolist() == [[0.5], [-1.0], [0.0], [0.0]]
    assert sc.thr.tolist() == [[0.5], [1.0], [0.0], [0.0]]
    assert sc.active.tolist() == [True, True, False, False]
    # mean_s of the only anchor (row 0) is .5, the anchor minimum of group 0.
    assert sc.anchor_min.tolist() == [0.5, 0.5, 0.0, 0.0]


def test_groups_without_contrast_get_zero_thr():
    hidden, probs, index, mask, adv, _, _ = random_batch(1, n=6)
    gid = torch.tensor([0, 0, 1, 1, 2, 2])
    correct = torch.tensor([False, False, True, True, True, False])  # group 0 none, 1 all, 2 mixed
    sc = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid)
    assert bool((sc.thr[:4] == 0).all()) and bool((sc.s[:4] == 0).all())
    assert bool((sc.thr[4:][mask[4:] == 1] != 0).all())
    assert sc.active.tolist() == [False] * 4 + [True] * 2


def test_len_norm_and_exclude_self_switches():
    hidden, probs, index, mask, adv, _, _ = random_batch(2, n=4, t=5)
    gid = torch.zeros(4, dtype=torch.long)
    correct = torch.tensor([True, True, False, False])
    base = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid)
    # len_norm: each token's score times 1/|y_j|.
    ln = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid, len_norm=True)
    torch.testing.assert_close(ln.s, base.s / mask.sum(-1, keepdim=True))
    # exclude_self: incorrect rows unchanged; correct row 0 uses only row 1 as anchor, i.e. the score
    # of a group where only row 1 is correct.
    ex = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid, exclude_self=True)
    torch.testing.assert_close(ex.s[2:], base.s[2:])
    only1 = token_hidden_reward(hidden, probs, index, mask, adv, torch.tensor([False, True, False, False]), gid)
    torch.testing.assert_close(ex.s[0], only1.s[0])
    assert not torch.allclose(ex.s[0], base.s[0])


# ---------------------------------------------------------------------------------------------
# THR == gradient inner product through the lm_head weight (autograd, tiny Llama)
# ---------------------------------------------------------------------------------------------
def _autograd_thr(logits_fn, weight, comp, mask, adv, correct, gid, vstar_rows=None):
    """A_j <grad_W sum_{i in P(j)} log L_i, grad_W log pi(y_{j,k})> with P(j) the correct responses of
    j's group, optionally restricted to W's V* rows. (Every test batch here has mixed groups.)"""
    logits = logits_fn()  # [N, T, V]
    logp = logits.log_softmax(-1).gather(-1, comp[..., None]).squeeze(-1)  # [N, T]
    n, t = comp.shape
    out = torch.zeros(n, t)
    for j in range(n):
        anchors = correct & (gid == gid[j])
        (grad_p,) = torch.autograd.grad((logp * mask)[anchors].sum(), weight, retain_graph=True)
        for k in range(t):
            if mask[j, k]:
                (grad_jk,) = torch.autograd.grad(logp[j, k], weight, retain_graph=True)
                prod = grad_p * grad_jk  # [V, d]
                if vstar_rows is not None:
                    prod = prod[vstar_rows[j]]
                out[j, k] = adv[j] * prod.sum()
    return out


def _setup_batch(model, *, seed, t=5, prompt_len=3, n_prompts=2, group=4):
    seq, comp, gid = rollout(model, n_prompts=n_prompts, group=group, prompt_len=prompt_len, t=t, seed=seed)
    n = seq.shape[0]
    mask = torch.ones(n, t)
    mask[1, 3:] = 0  # right padding on two responses
    mask[6, 4:] = 0
    attn = torch.cat([torch.ones(n, prompt_len), mask], 1).long()
    correct = torch.tensor([True, False, True, False, False, True, False, False])
    rewards = correct.float()
    adv = torch.zeros(n)
    for gv in gid.unique():  # GRPO (r - mean) / std per group
        r = rewards[gid == gv]
        adv[gid == gv] = (r - r.mean()) / (r.std() + 1e-4)
    return seq, comp, gid, mask, attn, correct, adv


def test_thr_equals_lm_head_gradient_inner_product_full_vocab():
    model = tiny_llama(tie=False)
    seq, comp, gid, mask, attn, correct, adv = _setup_batch(model, seed=0)
    with torch.no_grad():
        logits, hidden = old_forward(model, seq, attn, 3)
    # V* = the full vocabulary: vstar_probs = softmax over V, index = the token id itself.
    sc = token_hidden_reward(hidden, logits.softmax(-1), comp, mask, adv, correct, gid)

    def logits_fn():
        return old_forward(model, seq, attn, 3)[0]

    ref = _autograd_thr(logits_fn, model.lm_head.weight, comp, mask, adv, correct, gid)
    scale = ref.abs().max()
    torch.testing.assert_close(sc.thr, ref, rtol=1e-5, atol=1e-5 * float(scale))
    assert float(scale) > 0


def test_collector_thr_equals_gradient_restricted_to_vstar_rows():
    # The V* restriction of g is exactly the restriction of the weight gradient to W's V* rows, so
    # the collector path (micro-batched, temperature 0.7) must match autograd on those rows.
    model = tiny_llama(tie=False, seed=1)
    seq, comp, gid, mask, attn, correct, adv = _setup_batch(model, seed=1)
    temp = 0.7
    vocab = group_vocab(comp, mask, gid)
    col = ThrCollector(vocab)
    with torch.no_grad():
        for rows in (torch.tensor([0, 5, 2]), torch.tensor([7, 1]), torch.tensor([3, 4, 6])):  # groups split
            logits, hidden = old_forward(model, seq[rows], attn[rows], 3, temp)
            col.add(rows, logits, hidden)
    sc = col.scores(adv, correct)
    vstar_rows = [vocab.ids[vocab.row_group[j], : vocab.sizes[vocab.row_group[j]]] for j in range(len(comp))]

    def logits_fn():
        return old_forward(model, seq, attn, 3, temp)[0]

    # With logits = W h / temp, d log pi / dW = g h^T / temp: the gradient inner product is THR / temp^2
    # (a positive constant, so signs and dominance are unchanged).
    ref = _autograd_thr(logits_fn, model.lm_head.weight, comp, mask, adv, correct, gid, vstar_rows) * temp**2
    torch.testing.assert_close(sc.thr, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))
    assert sc.time_s > 0


def test_tied_embedding_model():
    # With tied embeddings W is also the input embedding; THR is defined through its lm_head use
    # only (logits = W h with h detached), which is what the collector computes.
    model = tiny_llama(tie=True, seed=2)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    seq, comp, gid, mask, attn, correct, adv = _setup_batch(model, seed=2)
    vocab = group_vocab(comp, mask, gid)
    col = ThrCollector(vocab)
    with torch.no_grad():
        logits, hidden = old_forward(model, seq, attn, 3)
    col.add(torch.arange(len(seq)), logits, hidden)
    sc = col.scores(adv, correct)
    w = model.lm_head.weight
    vstar_rows = [vocab.ids[vocab.row_group[j], : vocab.sizes[vocab.row_group[j]]] for j in range(len(comp))]
    ref = _autograd_thr(lambda: torch.nn.functional.linear(hidden, w), w, comp, mask, adv, correct, gid, vstar_rows)
    torch.testing.assert_close(sc.thr, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


# ---------------------------------------------------------------------------------------------
# hidden_states[-1] is the lm_head input (post final norm) in the installed transformers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [False, True])
def test_hidden_states_last_is_post_norm_lm_head_input(tie):
    from peft import LoraConfig, get_peft_model

    model = tiny_llama(tie=tie, seed=3)
    ids = torch.randint(0, 16, (2, 7), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[1, 5:] = 0
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        assert torch.equal(model.lm_head(out.hidden_states[-1]), out.logits)
        # It is the final norm's output (captured with a hook), not the last decoder layer's output.
        seen = []
        handle = model.model.norm.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out)))
        out = model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        handle.remove()
        assert torch.equal(seen[0][1], out.hidden_states[-1])
        assert not torch.allclose(seen[0][0], out.hidden_states[-1])
        # transformers >= 5: output_hidden_states=-1 keeps only that state (less memory), same tensor.
        only_last = model(input_ids=ids, attention_mask=attn, output_hidden_states=-1)
        assert torch.equal(only_last.hidden_states[-1], out.hidden_states[-1])

    targets = ["q_proj", "v_proj"] + ([] if tie else ["lm_head"])
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():
        out = peft_model(input_ids=ids, attention_mask=attn, output_hidden_states=True)
        assert torch.equal(peft_model.get_output_embeddings()(out.hidden_states[-1]), out.logits)


# ---------------------------------------------------------------------------------------------
# V* restriction vs full vocabulary
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vstar_restriction_agrees_in_sign_with_full_vocab(seed):
    # Exact bound: <g_i,g_j>_full - <g_i,g_j>_V* = sum_{v not in V*} pi_i(v) pi_j(v), which lies in
    # [0, m_i m_j] with m = 1 - pi(V*) the tail mass outside V* (sampled ids are all in V*). So
    # |s_full - s_V*| <= bound_{j,k} = sum_{i in P, k'} m_{i,k'} m_{j,k} |<h_{i,k'}, h_{j,k}>|, and the sign
    # is certified wherever |s_V*| > bound. Empirical criterion (sampled from the model itself, vocab 64,
    # ~40% tail mass): >= 90% of scored tokens, and >= 95% of the larger half (|s| above median), agree.
    model = tiny_llama(vocab=64, hidden=16, seed=seed)
    seq, comp, gid = rollout(model, n_prompts=3, group=8, prompt_len=3, t=8, seed=seed)
    n, t = comp.shape
    mask = torch.ones(n, t)
    correct = torch.rand(n, generator=torch.Generator().manual_seed(seed)) < 0.5
    adv = torch.ones(n)
    with torch.no_grad():
        logits, hidden = old_forward(model, seq, torch.ones_like(seq), 3)
    full = token_hidden_reward(hidden, logits.softmax(-1), comp, mask, adv, correct, gid)
    vocab = group_vocab(comp, mask, gid)
    col = ThrCollector(vocab)
    col.add(torch.arange(n), logits, hidden)
    vs = col.scores(adv, correct)

    tail = 1.0 - col._probs.sum(-1)  # [N, T]
    bound = torch.zeros(n, t)
    for j in range(n):
        anchors = ((gid == gid[j]) & correct).nonzero(as_tuple=True)[0]
        hh = torch.einsum("itd,kd->itk", hidden[anchors], hidden[j]).abs()  # [n_P, T', T]
        bound[j] = (tail[anchors][..., None] * hh).sum((0, 1)) * tail[j]
    act = full.active[:, None].expand(n, t)
    diff = (full.s - vs.s)[act]
    assert bool((diff.abs() <= bound[act] + 1e-5).all())
    certified = act & (vs.s.abs() > bound)
    assert bool((torch.sign(full.s) == torch.sign(vs.s))[certified].all())
    agree = torch.sign(full.s) == torch.sign(vs.s)
    assert agree[act].float().mean() >= 0.90
    big = act & (full.s.abs() > full.s.abs()[act].median())
    assert agree[big].float().mean() >= 0.95


# ---------------------------------------------------------------------------------------------
# C. collector: micro-batching is invisible
# ---------------------------------------------------------------------------------------------
def test_microbatch_split_equals_one_batch():
    model = tiny_llama(seed=4)
    seq, comp, gid, mask, attn, correct, adv = _setup_batch(model, seed=4)
    with torch.no_grad():
        logits, hidden = old_forward(model, seq, attn, 3)
    vocab = group_vocab(comp, mask, gid)
    one = ThrCollector(vocab)
    one.add(torch.arange(8), logits, hidden)
    split = ThrCollector(vocab)
    for rows in (torch.tensor([6, 0]), torch.tensor([3]), torch.tensor([1, 7, 2, 5]), torch.tensor([4])):
        t_mb = int(mask[rows].sum(0).nonzero().max()) + 1  # micro-batch trimmed to its longest completion
        split.add(rows, logits[rows, :t_mb], hidden[rows, :t_mb])
    for kw in ({}, {"len_norm": True, "exclude_self": True}):
        a, b = one.scores(adv, correct, **kw), split.scores(adv, correct, **kw)
        assert torch.equal(a.s, b.s) and torch.equal(a.thr, b.thr) and torch.equal(a.anchor_min, b.anchor_min)
    # And separate forwards per micro-batch (different batch composition) agree to fp32 noise.
    sep = ThrCollector(vocab)
    with torch.no_grad():
        for rows in (torch.tensor([6, 0, 3]), torch.tensor([1, 7, 2, 5, 4])):
            sep.add(rows, *old_forward(model, seq[rows], attn[rows], 3))
    torch.testing.assert_close(sep.scores(adv, correct).thr, one.scores(adv, correct).thr, rtol=1e-5, atol=1e-6)


def test_collector_errors_are_explicit():
    comp = torch.tensor([[1, 2, 3], [2, 2, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    col = ThrCollector(group_vocab(comp, mask, torch.tensor([0, 0])))
    with pytest.raises(ValueError, match="never added"):
        col.scores(torch.zeros(2), torch.tensor([True, False]))
    with pytest.raises(ValueError, match="completion positions"):
        col.add(torch.tensor([0]), torch.zeros(1, 2, 5), torch.zeros(1, 2, 4))  # row 0 has 3 tokens
    with pytest.raises(ValueError, match="Slice hidden_states"):
        col.add(torch.tensor([0]), torch.zeros(1, 3, 5), torch.zeros(1, 2, 4))
    col.add(torch.tensor([1]), torch.zeros(1, 2, 5), torch.zeros(1, 2, 4))  # row 1 fits in 2 positions
    with pytest.raises(ValueError, match="bool"):
        token_hidden_reward(torch.zeros(2, 3, 4), torch.zeros(2, 3, 3), torch.zeros(2, 3, dtype=torch.long),
                            mask, torch.zeros(2), torch.tensor([1, 0]), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="outside"):
        token_hidden_reward(torch.zeros(2, 3, 4), torch.zeros(2, 3, 3), torch.full((2, 3), 3),
                            mask, torch.zeros(2), torch.tensor([True, False]), torch.tensor([0, 0]))


def test_group_vocab_excludes_masked_tokens():
    # Row 0's padding id 15 and row 1's tool-output id 14 (mask 0) are not in V*.
    comp = torch.tensor([[4, 2, 15], [2, 14, 9]])
    v = group_vocab(comp, torch.tensor([[1, 1, 0], [1, 0, 1]]), torch.tensor([0, 0]))
    assert v.ids.tolist() == [[2, 4, 9]] and v.sizes.tolist() == [3]
    assert v.index.tolist() == [[1, 0, 0], [0, 0, 2]]


# ---------------------------------------------------------------------------------------------
# correct_mask
# ---------------------------------------------------------------------------------------------
def test_correct_mask_rules():
    gid = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    # group 0: max .9 > min .1 -> the .9s; group 1: all equal -> none; group 2: NaN never correct,
    # ignored for max/min, so 0.3 alone has max == min -> none.
    r = torch.tensor([0.9, 0.1, 0.9, 0.5, 0.5, float("nan"), 0.3])
    assert correct_mask(r, gid).tolist() == [True, False, True, False, False, False, False]
    assert correct_mask(r, gid, threshold=0.5).tolist() == [True, False, True, True, True, False, False]
    binary = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    bg = torch.tensor([0, 0, 1, 1, 2, 2])
    assert correct_mask(binary, bg).tolist() == [True, False, True, False, False, False]  # group 2 all correct
    with pytest.raises(ValueError, match="one scalar reward"):
        correct_mask(torch.zeros(3, 2), torch.zeros(3))


# ---------------------------------------------------------------------------------------------
# B. reweighting
# ---------------------------------------------------------------------------------------------
def _hand_scores() -> tuple[ThrScores, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # One group: row 0 correct (A=+1), row 1 incorrect (A=-1); s given by hand.
    s = torch.tensor([[0.4, 0.1], [-0.5, 0.2]])
    adv = torch.tensor([1.0, -1.0])
    thr = adv[:, None] * s  # [[.4, .1], [.5, -.2]]
    mean_s = s.mean(-1)  # [.25, -.15]; anchor min = row 0's .25
    sc = ThrScores(s=s, thr=thr, active=torch.tensor([True, True]), mean_s=mean_s,
                   anchor_min=torch.tensor([0.25, 0.25]))
    return sc, adv, torch.ones(2, 2), torch.tensor([0, 0]), torch.tensor([True, False])


def test_reweight_by_hand():
    sc, adv, mask, gid, corr = _hand_scores()
    # tau = max(0, 1 * .25) = .25; dominant |s| > .25: (0,0)=.4 and (1,0)=.5.
    # A~(0,0) = 1 * (1 + .5 * sign(.4)) = 1.5; A~(1,0) = -1 * (1 + .5 * sign(+.5)) = -1.5.
    a, stats = thr_token_advantages(adv, sc, mask, gid, corr, p=0.5)
    assert a.tolist() == [[1.5, 1.0], [-1.5, -1.0]]
    assert stats == pytest.approx({"thr/dominant_frac": 0.5, "thr/pos_frac": 0.75, "thr/neg_frac": 0.25,
                                   "thr/tau": 0.25, "thr/abs_mean": 0.3, "thr/time_s": 0.0})
    # p < 0 (exploration) shrinks the same tokens: 1 * .5 and -1 * .5.
    a, _ = thr_token_advantages(adv, sc, mask, gid, corr, p=-0.5)
    assert a.tolist() == [[0.5, 1.0], [-0.5, -1.0]]
    # mode "mask": non-dominant tokens get 0.
    a, _ = thr_token_advantages(adv, sc, mask, gid, corr, p=0.5, mode="mask")
    assert a.tolist() == [[1.5, 0.0], [-1.5, 0.0]]
    # beta = 2: tau = .5, nothing is strictly above it -> plain advantages.
    a, stats = thr_token_advantages(adv, sc, mask, gid, corr, p=0.5, beta=2.0)
    assert a.tolist() == [[1.0, 1.0], [-1.0, -1.0]] and stats["thr/dominant_frac"] == 0.0
    # percentile .7 of |THR| = sorted (.1, .2, .4, .5) at position .7 * 3 = 2.1 -> .4 + .1 * .1 = .41:
    # only (1,0) with |THR| = .5 is dominant.
    a, stats = thr_token_advantages(adv, sc, mask, gid, corr, p=0.5, threshold="percentile", percentile=0.7)
    assert a.tolist() == [[1.0, 1.0], [-1.5, -1.0]]
    assert stats["thr/tau"] == pytest.approx(0.41)


def test_p_zero_reweight_is_bitwise_grpo():
    hidden, probs, index, mask, adv, correct, gid = random_batch(5, n=7, t=6)
    sc = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid)
    for threshold in ("nthr", "percentile"):
        a, _ = thr_token_advantages(adv, sc, mask, gid, correct, p=0.0, threshold=threshold)
        assert torch.equal(a, adv[:, None].expand(-1, 6))
    adv_tok = torch.randn(7, 6, dtype=torch.float64)  # per-token (GAE) advantages, other dtype
    a, _ = thr_token_advantages(adv_tok, sc, mask, gid, correct, p=0.0)
    assert a.dtype == torch.float64 and torch.equal(a, adv_tok)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.floats(-0.999, 0.999), mode=st.sampled_from(["reweight", "mask"]),
       threshold=st.sampled_from(["nthr", "percentile"]), beta=st.floats(0.0, 3.0))
def test_reweight_never_flips_sign(seed, p, mode, threshold, beta):
    hidden, probs, index, mask, adv, correct, gid = random_batch(seed, n=6, t=4)
    sc = token_hidden_reward(hidden, probs, index, mask, adv, correct, gid)
    a, stats = thr_token_advantages(adv, sc, mask, gid, correct, p=p, mode=mode, threshold=threshold, beta=beta)
    base = adv[:, None].expand(-1, 4)
    assert bool((a * base >= 0).all())  # same sign or zeroed, never flipped
    assert bool((a.abs() <= base.abs() * (1 + abs(p)) * (1 + 1e-6)).all())
    assert 0.0 <= stats["thr/dominant_frac"] <= 1.0
    assert stats["thr/pos_frac"] + stats["thr/neg_frac"] <= 1.0 + 1e-9


def test_reweight_errors():
    sc, adv, mask, gid, corr = _hand_scores()
    with pytest.raises(ValueError, match=r"outside \(-1, 1\)"):
        thr_token_advantages(adv, sc, mask, gid, corr, p=1.0)
    with pytest.raises(ValueError, match="mode"):
        thr_token_advantages(adv, sc, mask, gid, corr, p=0.1, mode="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same rollout batch"):
        thr_token_advantages(adv, sc, torch.ones(2, 3), gid, corr, p=0.1)


def test_steering_p():
    assert steering_p("constant", p_start=0.2, p_end=-0.2, step=50, total_steps=100) == 0.2
    # linear: p_start at step 0, p_end at the last step (total_steps - 1), then held.
    assert steering_p("linear", p_start=0.0, p_end=-0.4, step=0, total_steps=5) == 0.0
    assert steering_p("linear", p_start=0.0, p_end=-0.4, step=2, total_steps=5) == pytest.approx(-0.2)
    assert steering_p("linear", p_start=0.0, p_end=-0.4, step=9, total_steps=5) == pytest.approx(-0.4)
    with pytest.raises(ValueError, match="unknown"):
        steering_p("cosine", p_start=0.0, p_end=0.1, step=0, total_steps=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outside"):
        steering_p("constant", p_start=1.5, p_end=0.1, step=0, total_steps=3)


# ---------------------------------------------------------------------------------------------
# E. inspect records, HTML, CLI
# ---------------------------------------------------------------------------------------------
def _char_tokenizer(vocab_chars: str):
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(vocab_chars)}, unk_token=vocab_chars[0]))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=vocab_chars[0])


def test_inspect_records_render_and_cli(tmp_path):
    import json

    from typer.testing import CliRunner

    from llmrl.algorithms.thr import dominant_tokens
    from llmrl.algorithms.thr_cli import app
    from llmrl.algorithms.thr_html import read_thr_inspect_jsonl, render_thr_html, thr_inspect_records, write_thr_inspect_jsonl

    tok = _char_tokenizer("?<>&\"'ab\ncdefgh z")  # 16 chars, ids 0..15 = the tiny model's vocab
    model = tiny_llama(seed=5)
    seq, comp, gid, mask, attn, correct, adv = _setup_batch(model, seed=5)
    vocab = group_vocab(comp, mask, gid)
    col = ThrCollector(vocab)
    with torch.no_grad():
        col.add(torch.arange(8), *old_forward(model, seq, attn, 3))
    sc = col.scores(adv, correct)
    dom = dominant_tokens(sc, mask, gid)
    recs = thr_inspect_records(tokenizer=tok, completion_ids=comp, token_mask=mask, group_ids=gid,
                               rewards=correct.float(), advantages=adv, correct=correct, scores=sc, dominant=dom,
                               prompts=["<b>1+1</b>"] * 8, step=7, max_groups=2)
    assert [r["group"] for r in recs] == [0, 1] and len(recs[0]["responses"]) == 4
    r1 = recs[0]["responses"][1]  # row 1 is padded after 3 tokens
    assert len(r1["tokens"]) == 3 and r1["tokens"][0] == tok.decode([int(comp[1, 0])])
    assert r1["thr"] == pytest.approx(sc.thr[1, :3].tolist(), abs=1e-5) and r1["dominant"] == dom[1, :3].tolist()
    path = tmp_path / "thr_samples.jsonl"
    write_thr_inspect_jsonl(recs, path)
    assert read_thr_inspect_jsonl(path) == json.loads(json.dumps(recs))

    page = render_thr_html(recs)
    assert page.startswith("<!DOCTYPE html>") and page.count('class="resp') == 8
    assert "&lt;b&gt;1+1&lt;/b&gt;" in page and "<b>1+1" not in page  # prompt escaped
    assert "<script" not in page and "http" not in page  # self-contained
    n_dom = sum(sum(r["dominant"]) for g in recs for r in g["responses"])
    assert n_dom > 0 and page.count('class="t dom"') == n_dom + 1  # + the legend's example
    assert "rgba(40,167,69" in page and "rgba(220,53,69" in page  # both signs colored

    out = tmp_path / "sub" / "thr.html"
    res = CliRunner().invoke(app, ["inspect", "--samples", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text(encoding="utf-8").count('class="resp') == 8
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"responses": [{"tokens": ["a"], "thr": []}]}\n')
    res = CliRunner().invoke(app, ["inspect", "--samples", str(bad), "--out", str(out)])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output
    res = CliRunner().invoke(app, ["inspect", "--samples", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_render_escapes_token_text():
    from llmrl.algorithms.thr_html import render_thr_html

    grp = {"group": "<g>", "responses": [{"tokens": ["</span><script>x</script>", "&amp;", "\n"], "thr": [0.2, -0.3, 0.0],
                                          "dominant": [False, True, False], "scored": [True, True, False],
                                          "reward": 0.0, "advantage": -1.0, "correct": False}]}
    page = render_thr_html([grp], title="<t>")
    assert "<script>" not in page and "&lt;/span&gt;&lt;script&gt;" in page
    assert "&amp;amp;" in page and "&lt;g&gt;" in page and "<title>&lt;t&gt;</title>" in page
    assert 'class="t env"' in page and "\u23ce" in page
