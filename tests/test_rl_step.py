"""The RL step's phases on explicit data: token-level rollouts (multi-turn without
re-tokenizing), estimators that declare what they need, the Updater seam, the KL objective with
flat groups, and one whole update against TRL's GRPOTrainer optimizer step."""
from __future__ import annotations

import math

import pytest
import torch

from llmrl.algorithms.advantages import ESTIMATORS, estimate
from llmrl.config.load import RecipeError, validate_recipe
from llmrl.models.tiny import build_char_tokenizer, build_tiny_model
from llmrl.rollout.hf_engine import HFEngine
from llmrl.rollout.types import ENV, PAD, POLICY, SamplingParams, Trajectory, batch_from_trajectories
from llmrl.trainer.forward import forward_completions
from llmrl.trainer.step import Forwards, rows_to_train, token_advantages, update_policy
from llmrl.trainer.token_weighting import TokenWeighting
from llmrl.trainer.updater import ParamSet, Updater, build_optimizer


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=64, num_layers=2, num_heads=4))


@pytest.fixture(scope="module")
def engine(model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return HFEngine(model, build_char_tokenizer(), max_prompt_length=64)


# ----------------------------------------------------------------------------------- rollouts
def test_two_turn_trajectory_is_built_from_ids_only(engine):
    tok = engine.tokenizer
    torch.manual_seed(0)
    sampling = SamplingParams(max_new_tokens=5, temperature=1.0, logprobs=True)
    trajs = [Trajectory(prompt_ids=ids) for ids in engine.encode(["12+3=", "7-4="])]
    turn1 = engine.generate_tokens([t.context_ids for t in trajs], sampling)
    for i, t in enumerate(trajs):
        t.extend_from(turn1, i)
    tool = [tok("<r>42</r>", add_special_tokens=False)["input_ids"], tok("<r>3</r>", add_special_tokens=False)["input_ids"]]
    for t, ids in zip(trajs, tool):
        t.extend(ids, ENV)
    turn2 = engine.generate_tokens([t.context_ids for t in trajs], sampling)
    for i, t in enumerate(trajs):
        t.extend_from(turn2, i)
    batch = batch_from_trajectories(trajs, pad_id=tok.pad_token_id, group_ids=torch.arange(2), tokenizer=tok)

    for i in range(2):
        ids1, _, _ = turn1.row(i)
        ids2, _, _ = turn2.row(i)
        n = len(ids1) + len(tool[i]) + len(ids2)
        assert batch.completion_ids[i, :n].tolist() == ids1 + tool[i] + ids2
        assert batch.token_owner[i].tolist() == [POLICY] * len(ids1) + [ENV] * len(tool[i]) + [POLICY] * len(ids2) \
            + [PAD] * (batch.completion_ids.shape[1] - n)
        assert batch.loss_mask[i].sum().item() == len(ids1) + len(ids2)
    # The trained tokens are the sampled ones in their real context: the trainer's forward over
    # the assembled batch gives the sampler's own log-probs at every policy token.
    logps = forward_completions(engine.model, batch, torch.arange(2), temperature=1.0).logps
    m = batch.loss_mask.bool()
    assert torch.isfinite(batch.sampler_logps[m]).all() and torch.isnan(batch.sampler_logps[~m]).all()
    torch.testing.assert_close(logps[m], batch.sampler_logps[m], rtol=1e-4, atol=1e-4)


def test_sampler_logprobs_follow_temperature_and_top_k(engine):
    torch.manual_seed(1)
    sampling = SamplingParams(max_new_tokens=6, temperature=0.7, top_k=5, logprobs=True)
    batch = engine.generate(["1+1=", "9-2="], sampling, n=3)
    m = batch.loss_mask.bool()
    lp = batch.sampler_logps[m]
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    # top-k 5 renormalises over 5 tokens: every sampled token's log-prob is above log(...) of the
    # unrestricted distribution at T=0.7, i.e. not equal to the plain softmax's
    plain = forward_completions(engine.model, batch, torch.arange(len(batch)), temperature=0.7).logps[m]
    assert (lp >= plain - 1e-5).all() and (lp > plain + 1e-4).any()


def test_stop_strings_and_stop_token_ids_end_completions(engine):
    tok = engine.tokenizer
    torch.manual_seed(2)
    free = engine.generate(["5+5="] * 8, SamplingParams(max_new_tokens=12, temperature=1.5), n=1)
    # pick a character the untrained model does emit, then stop on it
    text = next(c for c in free.completions if len(c) >= 3)
    stop_char = text[1]
    torch.manual_seed(2)
    stopped = engine.generate(["5+5="] * 8, SamplingParams(max_new_tokens=12, temperature=1.5, stop=(stop_char,)), n=1)
    hit = [i for i, c in enumerate(stopped.completions) if stop_char in c]
    assert hit
    for i in hit:
        c = stopped.completions[i]
        assert c.endswith(stop_char) and c.count(stop_char) == 1 and stopped.finish_reason[i] == "stop"
    stop_id = tok(stop_char, add_special_tokens=False)["input_ids"][0]
    torch.manual_seed(2)
    by_id = engine.generate(["5+5="] * 8, SamplingParams(max_new_tokens=12, temperature=1.5, stop_token_ids=(stop_id,)), n=1)
    for row, reason in zip(by_id.policy_ids(), by_id.finish_reason):
        assert stop_id not in row[:-1]
        assert reason == "stop" or len(row) == 12


# ----------------------------------------------------------------------------------- estimators
def test_group_estimators_need_two_generations_and_reinforce_does_not(tmp_path):
    base = {"rollout": {"num_generations": 1}, "rewards": [{"name": "reward_fixtures:length_reward"}]}
    with pytest.raises(RecipeError, match=r"rollout.num_generations.*grpo.*reinforce"):
        validate_recipe(base)
    cfg = validate_recipe({**base, "algorithm": {"advantage": "reinforce"}})
    assert not ESTIMATORS["reinforce"].needs_groups and ESTIMATORS["grpo"].needs_groups
    adv = estimate("reinforce", torch.tensor([1.0, 0.0, 0.5]), torch.ones(3, 2), group_size=1)
    assert adv.tokens[:, 0].tolist() == [0.5, -0.5, 0.0]
    assert cfg.rollout.num_generations == 1


def test_reinforce_trains_with_one_generation_per_prompt(tmp_path):
    import json

    from llmrl.trainer.loop import train

    cfg = validate_recipe({
        "model": {"name_or_path": "tiny://arithmetic"},
        "data": {"name": "arithmetic", "train_size": 64, "eval_size": 8},
        "rollout": {"num_generations": 1, "max_completion_length": 6, "max_prompt_length": 32},
        "rewards": [{"name": "reward_fixtures:length_reward"}],
        "algorithm": {"advantage": "reinforce"},
        "trainer": {"steps": 2, "prompts_per_step": 16, "lr": 1e-3, "output_dir": str(tmp_path / "run"),
                    "eval_every": 0, "checkpoint_every": 0},
        "logging": {"progress": False, "tensorboard": False, "plot": False},
    })
    train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward/mean" in r]
    assert len(steps) == 2 and all(r["train/rows"] == 16 and r["loss/grad_norm"] > 0 for r in steps)


def test_flat_groups_are_kept_for_the_kl_term():
    flat = torch.tensor([False, True, False])
    cfg = validate_recipe({"rewards": [{"name": "reward_fixtures:length_reward"}],
                           "algorithm": {"kl_coef": 0.0}})
    assert rows_to_train(flat, 6, 2, cfg.algorithm).tolist() == [0, 1, 4, 5]
    cfg.algorithm.kl_coef = 0.04
    assert rows_to_train(flat, 6, 2, cfg.algorithm).tolist() == [0, 1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------------- updater
def test_updater_second_parameter_set_and_hooks():
    torch.manual_seed(0)
    actor, critic = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    x = torch.randn(8, 3)
    seen = []
    up = Updater(policy=ParamSet(list(actor.parameters()), build_optimizer("SGD", actor.parameters(), lr=0.1)),
                 critic=ParamSet(list(critic.parameters()), build_optimizer("SGD", critic.parameters(), lr=0.0),
                                 max_grad_norm=1.0),
                 micro_batch_size=3, hooks=[lambda u, step, stats: seen.append((step, stats["grad_norm"]))])
    a0, c0 = actor.weight.detach().clone(), critic.weight.detach().clone()

    def loss_fn(rows):
        return (actor(x[rows]).sum() + critic(x[rows]).pow(2).sum()) / 8, {}

    st = up.step(torch.arange(8), loss_fn)
    assert not torch.equal(actor.weight, a0)
    assert torch.equal(critic.weight, c0)  # its own optimizer, with lr 0
    assert st["critic_grad_norm"] > 0 and seen == [(1, st["grad_norm"])]
    # micro-batch accumulation (3+3+2 rows) equals one batch of 8
    full = torch.autograd.grad(actor(x).sum() / 8, actor.weight)[0]
    torch.testing.assert_close(actor.weight, a0 - 0.1 * full)


def test_unknown_optimizer_or_argument_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"trainer.optimizer: 'AdamX'.*Did you mean 'Adam'.*AdamW"):
        validate_recipe({"trainer": {"optimizer": "AdamX"}})
    with pytest.raises(RecipeError, match=r"trainer.optimizer_args.betaz.*Did you mean 'betas'"):
        validate_recipe({"trainer": {"optimizer_args": {"betaz": [0.9, 0.95]}}})


# ----------------------------------------------------------------------------------- TRL parity
def test_one_whole_update_equals_trl_grpo_optimizer_step(model_dir, tmp_path):
    """Same batch, same parameters: our estimator + row selection + Updater (SGD, clipping)
    leave the same parameters as TRL's GRPOTrainer loss + its own optimizer step. One group is
    flat and beta > 0, with the policy moved away from the reference: TRL keeps the flat group for
    its KL term, and so must we (dropping it changes the update)."""
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from test_trl_parity import make_batch as make_parity_batch

    LR, BETA, TEMP, G = 0.05, 0.04, 0.7, 2
    args = GRPOConfig(output_dir=str(tmp_path / "trl"), report_to="none", use_cpu=True, save_strategy="no",
                      bf16=False, per_device_train_batch_size=6, num_generations=G, gradient_accumulation_steps=1,
                      max_completion_length=9, temperature=TEMP, loss_type="grpo", beta=BETA, epsilon=0.2,
                      epsilon_high=0.28, use_bias_correction_kl=False, learning_rate=LR, max_grad_norm=1.0,
                      weight_decay=0.0, optim="sgd")
    tok = build_char_tokenizer()
    trainer = GRPOTrainer(model=model_dir, reward_funcs=lambda prompts, completions, **kw: [0.0] * len(prompts),
                          args=args, train_dataset=Dataset.from_dict({"prompt": ["1+1="] * 6}), processing_class=tok)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    model = trainer.model
    batch = make_parity_batch(tok)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.0, 1.0])          # group 1 is flat
    rows = torch.arange(len(batch))
    with torch.no_grad():
        current = forward_completions(model, batch, rows, temperature=TEMP).logps
    mask = batch.loss_mask.float()
    old = torch.where(mask.bool(), current - 0.1, torch.full_like(current, -3.0))
    g = torch.Generator().manual_seed(0)
    ref = current + 0.3 * torch.randn(current.shape, generator=g)      # policy != reference: KL has a gradient
    start = {n: p.detach().clone() for n, p in model.named_parameters()}

    # TRL: its advantage formula (grpo_trainer.py, _generate_and_score_completions), its loss, its optimizer.
    r = rewards.view(-1, G)
    trl_adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)
    inputs = {"prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask, "completion_ids": batch.completion_ids,
              "completion_mask": batch.completion_mask, "advantages": trl_adv, "old_per_token_logps": old,
              "ref_per_token_logps": ref, "num_items_in_batch": mask.sum()}
    trainer.create_optimizer()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.compute_loss(model, inputs).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
    trainer.optimizer.step()
    trl_after = {n: p.detach().clone() for n, p in model.named_parameters()}

    # Ours, from the same start.
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(start[n])
    cfg = validate_recipe({"rewards": [{"name": "reward_fixtures:length_reward"}],
                           "rollout": {"num_generations": G, "temperature": TEMP, "max_completion_length": 9},
                           "algorithm": {"advantage": "grpo", "loss_agg": "seq-mean-token-mean", "kl_coef": BETA,
                                         "kl_estimator": "k3", "clip_eps_low": 0.2, "clip_eps_high": 0.28}})
    from llmrl.algorithms.advantages import zero_variance_groups

    keep = rows_to_train(zero_variance_groups(rewards, G), len(batch), G, cfg.algorithm)
    assert len(keep) == len(batch)
    params = [p for p in model.parameters() if p.requires_grad]
    updater = Updater(ParamSet(params, build_optimizer("SGD", params, lr=LR, weight_decay=0.0), max_grad_norm=1.0),
                      micro_batch_size=4)  # two micro-batches: accumulation must not matter
    adv = estimate("grpo", rewards, batch.loss_mask, group_size=G)
    tok_adv = token_advantages(TokenWeighting(cfg.algorithm.token_weighting, total_steps=1), adv, rewards, batch, 1,
                               fused=False)
    update_policy(updater, model, batch, Forwards(old_logps=old, ref_logps=ref), tok_adv, cfg.algorithm,
                  temperature=TEMP, max_len=9, step=1)
    moved = 0
    for n, p in model.named_parameters():
        # SGD, not Adam: Adam's first step is ~LR * sign(grad), which turns float-order noise in
        # near-zero gradients into LR-sized differences; SGD keeps the update linear in the
        # gradient, so this compares loss, clipping, accumulation and step exactly.
        torch.testing.assert_close(p.detach(), trl_after[n], rtol=1e-5, atol=1e-7, msg=lambda s: f"{n}: {s}")
        moved += int(not torch.equal(trl_after[n], start[n]))
    assert moved > 0
