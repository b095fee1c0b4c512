"""model.gradient_checkpointing: the update recomputes decoder layers in the backward pass and
gives the same loss and first-step update as without it (full model and LoRA)."""
from pathlib import Path

import pytest
import torch

from llmrl.config.load import validate_recipe
from llmrl.trainer.loop import rl_step, setup


def recipe(out: Path, **model) -> dict:
    return {
        "model": {"name_or_path": "tiny://arithmetic", **model},
        "data": {"name": "arithmetic", "train_size": 32, "eval_size": 0},
        "rollout": {"num_generations": 4, "max_completion_length": 6, "max_prompt_length": 32},
        "rewards": [{"name": "reward_fixtures:length_reward"}],
        "trainer": {"steps": 1, "prompts_per_step": 4, "micro_batch_size": 8, "lr": 1e-3, "seed": 3,
                    "device": "cpu", "output_dir": str(out), "eval_every": 0, "checkpoint_every": 0},
        "logging": {"progress": False, "tensorboard": False, "plot": False, "samples_per_step": 0},
    }


def first_step(out: Path, **model):
    """Step 1's metrics, the trainable weights after it, and how often the first decoder layer ran."""
    run, state = setup(validate_recipe(recipe(out, **model)))
    base = run.policy.get_base_model() if hasattr(run.policy, "get_base_model") else run.policy
    layer_calls = {"train": 0}

    def count(module, args):
        layer_calls["train"] += module.training  # update forwards (and their recomputation) only
    # a module inside the layer (transformers checkpoints the layer's forward, not its hooks); a
    # pre-hook, because the recomputation stops as soon as it has the tensors the backward needs
    base.model.layers[0].mlp.register_forward_pre_hook(count)
    m = rl_step(run, state, 1)
    weights = {n: p.detach().clone() for n, p in run.policy.named_parameters() if p.requires_grad}
    run.logger.close()
    return m, weights, layer_calls["train"], base


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}], ids=["full", "lora"])
def test_checkpointing_trains_the_same(tmp_path, lora, one_torch_thread):
    m_off, w_off, calls_off, _ = first_step(tmp_path / "off", lora=lora)
    m_on, w_on, calls_on, base_on = first_step(tmp_path / "on", lora=lora, gradient_checkpointing=True)
    assert all(layer.gradient_checkpointing for layer in base_on.model.layers)
    # 16 rows in micro-batches of 8: 2 update forwards; checkpointing reruns each in the backward pass
    assert calls_off == 2 and calls_on == 2 * calls_off
    for key in ("loss/policy", "loss/grad_norm", "reward/mean"):
        assert m_on[key] == pytest.approx(m_off[key], rel=1e-5, abs=1e-7), key
    assert w_on.keys() == w_off.keys() and w_on
    for name in w_off:
        torch.testing.assert_close(w_on[name], w_off[name], rtol=1e-5, atol=1e-6, msg=name)
