"""The agent loop (llmrl/rollout/agent.py) with the research tools over a real SQLite index.

The scripted engine below stands in for the *policy* only (a random tiny model does not write
tool calls); the loop, the tools, the index, the tokenizer and the trainer's forward/loss are
the real ones. Its turns are spelled with non-canonical ids (``<eos>`` as five character
tokens, where the tokenizer would encode one special token), so any decode + re-encode of the
trajectory changes the ids and fails the token-for-token checks."""
import json
import math
import time

import pytest
import torch

from llmrl.algorithms.losses import policy_loss
from llmrl.models.load import load_model_and_tokenizer
from llmrl.research.index import SearchIndex, build_index
from llmrl.research.tools import ToolContext, research_tools
from llmrl.rewards.research import research_f1_reward
from llmrl.rollout.agent import AgentEngine, AgentLimits, run_calls
from llmrl.rollout.hf_engine import HFEngine
from llmrl.rollout.types import ENV, POLICY, SamplingParams, Trajectory, batch_from_trajectories
from llmrl.trainer.forward import forward_completions

CORPUS = [
    {"passage_id": "p0", "title": "Zorbland", "text": "The capital of Zorbland is Quixville, founded in 1802."},
    {"passage_id": "p1", "title": "Quixville", "text": "Quixville is famous for its glass bridge."},
    {"passage_id": "p2", "title": "Mount Plim", "text": "Mount Plim is the tallest mountain of Varnia."},
]


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory):
    model, tok = load_model_and_tokenizer("tiny://arithmetic")
    return tok, model


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    (d / "c.jsonl").write_text("\n".join(json.dumps(r) for r in CORPUS))
    return SearchIndex(build_index(d / "c.jsonl", d / "c.sqlite"))


def spelled(tok, text: str) -> list[int]:
    """One id per character, even where the tokenizer would match a special token."""
    return [tok.convert_tokens_to_ids(c) for c in text]


class ScriptedPolicy:
    """Engine Protocol; each call returns the next scripted turn per context (keyed by the
    context's prompt) and records every id it 'sampled' and every context it was given."""

    def __init__(self, tok, scripts: dict[int, list[str]]):
        self.tok, self.scripts = tok, scripts     # prompt length -> turn texts
        self.sampled: dict[int, list[list[int]]] = {k: [] for k in scripts}
        self.contexts: list[list[int]] = []

    def generate_tokens(self, contexts, sampling, *, n=1):
        trajs = []
        for c in contexts:
            self.contexts.append(list(c))
            key = next(k for k in self.scripts if len(c) >= k and c[:k] == self.prompt(k))
            turn = len(self.sampled[key])
            ids = spelled(self.tok, self.scripts[key][turn])[: sampling.max_new_tokens]
            self.sampled[key].append(ids)
            t = Trajectory(prompt_ids=list(c))
            t.extend(ids, POLICY, [-0.5] * len(ids))
            trajs.append(t)
        return batch_from_trajectories(trajs, pad_id=self.tok.pad_token_id, group_ids=torch.arange(len(trajs)))

    def prompt(self, k: int) -> list[int]:
        return [self.tok.bos_token_id] + spelled(self.tok, chr(ord("a") + k % 26) * (k - 1))


def call(name, **args):
    return f'<think>t<eos>k</think><tool_call>{json.dumps({"name": name, "arguments": args})}</tool_call>'


def test_ids_trained_equal_ids_sampled_across_turns(tok_model, index):
    tok, _ = tok_model
    script = [call("web_search", query=["capital of Zorbland"]),
              call("browse_webpage", url_list=["corpus://p0"]),
              call("web_search", query=["Quixville famous"]),
              "<think>so<eos></think><answer>Quixville</answer>"]
    policy = ScriptedPolicy(tok, {5: script})
    engine = AgentEngine(policy, tok, research_tools(index, k=2), AgentLimits(max_total_tokens=4000))
    batch = engine.generate_tokens([policy.prompt(5)], SamplingParams(max_new_tokens=200), n=1)
    ids, owner, logps = batch.row(0)
    # The trajectory is the sampled turns with ENV tool turns between them, token for token.
    sampled = policy.sampled[5]
    assert len(sampled) == 4 and batch.extras["agent"][0]["turns"] == 3
    assert [t for t, o in zip(ids, owner) if o == POLICY] == sum(sampled, [])
    assert batch.policy_ids()[0] == sum(sampled, [])
    # Each turn was generated from the exact token prefix: prompt + everything appended so far.
    P = len(policy.prompt(5))
    for k, ctx in enumerate(policy.contexts):
        assert ctx == policy.prompt(5) + ids[:len(ctx) - P]
        assert ids[len(ctx) - P:len(ctx) - P + len(sampled[k])] == sampled[k]
    # Non-canonical ids survived (re-encoding would have merged the spelled <eos> into one id).
    assert tok(tok.decode(sampled[0]), add_special_tokens=False)["input_ids"] != sampled[0]
    # Tool turns are ENV-owned, hold the search result, and carry no sampler log-prob.
    env_text = tok.decode([t for t, o in zip(ids, owner) if o == ENV])
    assert "corpus://p0" in env_text and "founded in 1802" in env_text and "glass bridge" in env_text
    assert all(math.isnan(lp) for lp, o in zip(logps, owner) if o == ENV)
    assert research_f1_reward(["q"], batch.completions, answers=[["Quixville"]]) == [1.0]


def test_tool_response_tokens_get_exactly_zero_gradient(tok_model, index):
    tok, model = tok_model
    script = [call("web_search", query=["Mount Plim"]), "<think>x</think><answer>Varnia</answer>"]
    policy = ScriptedPolicy(tok, {7: script})
    batch = AgentEngine(policy, tok, research_tools(index, k=1)).generate_tokens(
        [policy.prompt(7)], SamplingParams(max_new_tokens=200))
    owner = batch.token_owner
    assert (owner == ENV).sum() > 20 and (owner == POLICY).sum() > 20
    fwd = forward_completions(model, batch, torch.arange(1), temperature=1.0)
    logps = fwd.logps
    logps.retain_grad()
    adv = torch.randn_like(logps)              # non-zero advantage on every position, ENV included
    loss, _ = policy_loss(logps, logps.detach() - 0.1, adv, batch.loss_mask.float(), kl_coef=0.1,
                          ref_logps=logps.detach() + 0.3, loss_agg="seq-mean-token-mean")
    loss.backward()
    g = logps.grad
    assert torch.all(g[owner == ENV] == 0)
    assert torch.all(g[owner == POLICY] != 0)


@pytest.mark.parametrize("bad, reason", [
    ('<think>x</think><tool_call>{"name": "web_search", "arguments": {"query": ["a"]</tool_call>', "malformed_json"),
    ('<think>x</think><tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>', "unknown_tool"),
    ('<think>x</think><tool_call>{"name": "web_search", "arguments": ' + json.dumps({"query": ["a" * 3000]})
     + '}</tool_call>', "overlong_call"),
    ('<think>x</think><tool_call>["web_search"]</tool_call>', "malformed_call"),
])
def test_malformed_calls_end_the_trajectory_with_the_penalty(tok_model, index, bad, reason):
    tok, _ = tok_model
    good = [call("web_search", query=["Zorbland"]), "<think>x</think><answer>Quixville</answer>"]
    policy = ScriptedPolicy(tok, {9: [bad, "<answer>never asked</answer>"], 11: good})
    engine = AgentEngine(policy, tok, research_tools(index), AgentLimits(max_total_tokens=8000))
    batch = engine.generate_tokens([policy.prompt(9), policy.prompt(11)], SamplingParams(max_new_tokens=4000))
    assert len(policy.sampled[9]) == 1 and len(policy.sampled[11]) == 2     # the bad row got no second turn
    assert batch.extras["agent"][0]["malformed"] == reason and batch.extras["agent"][1]["malformed"] is None
    assert (batch.token_owner[0] == ENV).sum() == 0
    assert research_f1_reward(["q"] * 2, batch.completions, answers=[["Quixville"]] * 2) == [-1.0, 1.0]


def test_max_turns_and_total_length(tok_model, index):
    tok, _ = tok_model
    loop = [call("web_search", query=["Zorbland"])] * 5
    policy = ScriptedPolicy(tok, {13: loop})
    batch = AgentEngine(policy, tok, research_tools(index), AgentLimits(max_turns=2, max_total_tokens=9000)
                        ).generate_tokens([policy.prompt(13)], SamplingParams(max_new_tokens=300))
    assert batch.extras["agent"][0]["turns"] == 2 and batch.extras["agent"][0]["malformed"] == "max_turns"
    policy = ScriptedPolicy(tok, {13: loop})
    batch = AgentEngine(policy, tok, research_tools(index), AgentLimits(max_total_tokens=150)
                        ).generate_tokens([policy.prompt(13)], SamplingParams(max_new_tokens=300))
    assert (batch.token_owner[0] != 0).sum() <= 150 and batch.finish_reason == ["length"]


def test_tool_response_is_cut_in_the_middle(tok_model):
    tok, _ = tok_model
    from llmrl.rollout.agent import ToolTurns

    text = "HEAD" + "x" * 1000 + "TAIL"
    out = tok.decode(ToolTurns(tok).render(text, max_tokens=100))
    assert "HEAD" in out and "TAIL" in out and "tokens cut" in out and out.count("x") < 100


def test_hung_and_failing_tools_do_not_stall_the_batch():
    def hang():
        time.sleep(60)
        return "late"

    def boom():
        raise ConnectionError("service down")

    t0 = time.monotonic()
    out = run_calls([hang, boom, lambda: "ok", hang], timeout_s=0.5)
    assert time.monotonic() - t0 < 0.95         # two hung calls cost one timeout (0.5 s), not two, not 60 s
    assert [f for _, f in out] == ["timeout", "error", None, "timeout"]
    assert out[2][0] == "ok" and "service down" in out[1][0]


def test_real_hf_engine_through_the_agent_loop(tok_model, index):
    """The real tiny model and engine: random text, so mostly no call, but the loop must give a
    valid batch whose policy tokens are what the engine sampled (stop strings included)."""
    tok, model = tok_model
    torch.manual_seed(0)
    engine = AgentEngine(HFEngine(model, tok, max_prompt_length=64), tok, research_tools(index))
    # later turns see the whole trajectory: the inner engine takes prompt + max_total_tokens
    assert engine.engine.max_prompt_length == 64 + AgentLimits().max_total_tokens
    prompts = ["<|user|>capital of Zorbland?<|end|><|assistant|>"] * 2
    batch = engine.generate(prompts, SamplingParams(max_new_tokens=12, logprobs=True), n=2)
    assert len(batch) == 4 and batch.completion_ids.shape[1] <= 12
    assert all(not math.isnan(v) for r in range(4) for v, o in zip(batch.row(r)[2], batch.row(r)[1]) if o == POLICY)
    assert len(batch.extras["agent"]) == 4
    long = engine.generate_tokens([list(range(10, 90))], SamplingParams(max_new_tokens=2))
    assert long.prompt_mask.sum() == 64                 # the prompt itself is still cut to 64
