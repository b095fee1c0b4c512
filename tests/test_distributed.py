"""Data-parallel training is invariant to the number of processes: two gloo ranks, each with
half of the prompt groups, give the loss, gradients and parameters of one process holding the
whole global batch (llmrl/trainer/distributed.py, Updater.step, update_policy)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from llmrl.config.schema import AlgorithmConfig
from llmrl.rollout.engine import build_engine
from llmrl.rollout.types import SamplingParams

G, PROMPTS, STEPS = 4, 4, 3
ALG = dict(advantage="grpo", loss_agg="token-mean")


def _model():
    from llmrl.models.load import load_model_and_tokenizer

    torch.manual_seed(0)
    return load_model_and_tokenizer("tiny://arithmetic")


def _train(batch, adv, rank: int, world: int) -> dict:
    """STEPS optimizer steps (SGD: Adam would amplify float-summation-order noise in near-zero
    gradients past 1e-5) of update_policy on this rank's whole groups; loss, grads, params."""
    from llmrl.trainer.distributed import shard_groups
    from llmrl.trainer.step import FixedTokenAdvantages, Forwards, update_policy
    from llmrl.trainer.updater import ParamSet, Updater

    torch.set_num_threads(1)
    policy, _ = _model()
    groups = shard_groups(PROMPTS)
    rows = torch.arange(groups.start * G, groups.stop * G)
    assert world == 1 or len(rows) == len(batch) // world
    local = batch.select(rows)
    params = [p for p in policy.parameters() if p.requires_grad]
    updater = Updater(ParamSet(params, torch.optim.SGD(params, lr=0.5)), micro_batch_size=3)
    losses = []
    for step in range(1, STEPS + 1):
        st = update_policy(updater, policy, local, Forwards(), FixedTokenAdvantages(adv[rows]),
                           AlgorithmConfig(**ALG), temperature=1.0, max_len=local.completion_ids.shape[1], step=step)
        losses.append(st["loss/policy"])
    return {"loss": losses, "grads": [p.grad.clone() for p in params], "params": [p.detach().clone() for p in params]}


def _worker(rank: int, world: int, port: int, batch, adv, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    from llmrl.trainer.distributed import init_from_env

    assert init_from_env() == (rank, world)
    torch.save(_train(batch, adv, rank, world), f"{out}.{rank}")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rollout():
    torch.manual_seed(1)
    policy, tok = _model()
    engine = build_engine("hf", policy, tok, max_prompt_length=16)
    batch = engine.generate_tokens(engine.encode(["1+2=", "3-1=", "12+4=", "7-5="]),
                                   SamplingParams(temperature=1.0, max_new_tokens=6), n=G)
    # per-token advantages differing by row and group, so a wrong normaliser shows
    adv = torch.randn(batch.completion_ids.shape, generator=torch.Generator().manual_seed(2))
    return batch, adv


def test_two_gloo_ranks_equal_one_process_with_the_global_batch(rollout, tmp_path):
    batch, adv = rollout
    assert len(batch) == PROMPTS * G and len(set(batch.loss_mask.sum(1).tolist())) > 1  # lengths differ: normaliser matters
    one = _train(batch, adv, 0, 1)
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(2, _free_port(), batch, adv, out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    for r in ranks:
        assert r["loss"] == pytest.approx(one["loss"], abs=1e-5)
        for name in ("grads", "params"):
            for a, b in zip(r[name], one[name]):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the update moved the parameters (a no-op update would make the comparison vacuous)
    p0, _ = _model()
    assert any((a - b).abs().max() > 1e-4 for a, b in zip(one["params"], [p for p in p0.parameters()]))
