"""The multi-turn agent loop: tool calls inside a rollout, on token ids, over any rollout engine.

Each assistant turn is ``<think>...</think>`` then ``<tool_call>{"name": ..., "arguments":
{...}}</tool_call>`` or ``<answer>...</answer>``. Generation stops at the closing tag; the calls
of all live trajectories run concurrently, each under its own timeout; each result goes back
as a tool turn rendered by the model's chat template, appended as ENV-owned tokens
(``Trajectory.extend(..., owner=ENV)``), and the next turn is generated from the token prefix
``Trajectory.context_ids``. The trajectory is never decoded and re-encoded (the
re-tokenization drift verl#6501 / #3960 report), so the ids the trainer scores are the ids
the engine sampled; ENV tokens are outside ``RolloutBatch.loss_mask``, so the loss, KL,
entropy and THR never see them.

A malformed call (not JSON, not ``{"name", "arguments"}``, an unknown tool, an unclosed or
overlong call) ends the trajectory: the reward's format check scores it (-1 for
DeepResearcher). A tool that raises or times out answers with an error text instead, and a
hung tool is abandoned on its daemon thread: the batch goes on (verl#2445).

``AgentEngine`` wraps an engine and has the engine Protocol itself, so the trainer's step is
unchanged: ``rollout.engine`` generates, the agent section of the recipe adds the tools.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from llmrl.rollout.types import ENV, POLICY, RolloutBatch, SamplingParams, Trajectory, batch_from_trajectories

TOOL_CALL_END, ANSWER_END = "</tool_call>", "</answer>"
_TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class AgentLimits:
    """max_turns: tool calls per trajectory (DeepResearcher: 10); max_tool_response_tokens: a
    longer tool answer loses its middle; max_total_tokens: policy + tool tokens after the
    prompt; max_call_chars: a longer call is malformed; tool_timeout_s: per call."""

    max_turns: int = 10
    max_tool_response_tokens: int = 512
    max_total_tokens: int = 2048
    max_call_chars: int = 2000
    tool_timeout_s: float = 10.0


@dataclass
class ToolCall:
    name: str
    arguments: dict


def parse_tool_call(turn_text: str, tools: Sequence[str], max_call_chars: int) -> ToolCall | str:
    """The last ``<tool_call>`` of a turn, or why it is malformed (a short reason string).

    >>> parse_tool_call('<think>x</think><tool_call>{"name": "web_search", "arguments": {"query": ["a"]}}'
    ...                 '</tool_call>', ["web_search"], 2000)
    ToolCall(name='web_search', arguments={'query': ['a']})
    >>> parse_tool_call('<tool_call>{"name": "rm"}</tool_call>', ["web_search"], 2000)
    'unknown_tool'
    """
    found = _TOOL_CALL.findall(turn_text)
    if not found:
        return "no_call"
    body = found[-1].strip()
    if len(body) > max_call_chars:
        return "overlong_call"
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return "malformed_json"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return "malformed_call"
    if call["name"] not in tools:
        return "unknown_tool"
    args = call.get("arguments", {})
    if not isinstance(args, dict):
        return "malformed_call"
    return ToolCall(call["name"], args)


def _start(fn: Callable[[], str]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start ``fn`` on a daemon thread (a hung call left behind never blocks the process's exit);
    its result or error lands in the returned dict."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["out"] = fn()
        except Exception as exc:  # noqa: BLE001 - a failing tool is the model's problem to read, not ours
            box["err"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=target, daemon=True, name="llmrl-tool")
    thread.start()
    return thread, box


def run_calls(calls: list[Callable[[], str]], timeout_s: float) -> list[tuple[str, str | None]]:
    """Run every call concurrently; each gets ``timeout_s`` from the common start, so the batch
    waits at most ``timeout_s`` whatever the number of hung tools. Each result is (text, None)
    or (error text, 'timeout' / 'error')."""
    started = [_start(fn) for fn in calls]
    deadline = time.monotonic() + timeout_s
    out = []
    for thread, box in started:
        thread.join(max(0.0, deadline - time.monotonic()))
        if "out" in box:
            out.append((str(box["out"]), None))
        elif "err" in box:
            out.append((f"error: {box['err']}", "error"))
        else:
            out.append((f"error: the tool did not answer within {timeout_s:g}s", "timeout"))
    return out


def truncate_middle(ids: list[int], max_tokens: int) -> tuple[list[int], list[int]] | None:
    """(head, tail) of an over-long token list, None when it fits."""
    if len(ids) <= max_tokens:
        return None
    head = max_tokens // 2
    return ids[:head], ids[len(ids) - (max_tokens - head):]


class ToolTurns:
    """Renders a tool result as the tokens that follow an assistant turn ended by ``</tool_call>``:
    the end of that assistant turn, the tool turn, and the next assistant header, exactly as the
    model's chat template writes them (found by rendering a conversation around a marker)."""

    MARK = "\u2063LLMRL_TOOL_RESULT\u2063"

    def __init__(self, tokenizer, role: str = "tool"):
        self.tokenizer = tokenizer
        msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A" + self.MARK}]
        full = tokenizer.apply_chat_template(msgs + [{"role": role, "content": self.MARK}], tokenize=False,
                                             add_generation_prompt=True)
        first = full.index(self.MARK) + len(self.MARK)
        second = full.index(self.MARK, first)
        self.before, self.after = full[first:second], full[second + len(self.MARK):]

    def ids(self, text: str) -> list[int]:
        enc = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        return enc(self.before + f"<tool_response>\n{text}\n</tool_response>" + self.after)

    def render(self, text: str, max_tokens: int) -> list[int]:
        """Tool-turn ids with the result's middle cut to ``max_tokens`` result tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = truncate_middle(ids, max_tokens)
        if cut is not None:
            text = (self.tokenizer.decode(cut[0]) + f"\n...[{len(ids) - max_tokens} tokens cut]...\n"
                    + self.tokenizer.decode(cut[1]))
        return self.ids(text)


@dataclass
class AgentStats:
    """Per trajectory: tool turns, calls per tool, malformed calls (by reason), timeouts, errors."""

    turns: int = 0
    calls: Counter = field(default_factory=Counter)
    malformed: str | None = None
    timeouts: int = 0
    errors: int = 0
    answered: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"turns": self.turns, "searches": self.calls.get("web_search", 0),
                "browses": self.calls.get("browse_webpage", 0), "calls": dict(self.calls),
                "malformed": self.malformed, "timeouts": self.timeouts, "errors": self.errors,
                "answered": self.answered}


def agent_rollout(engine, tokenizer, contexts: list[list[int]], sampling: SamplingParams, tools: dict[str, Callable],
                  *, n: int = 1, limits: AgentLimits = AgentLimits(), questions: list[str] | None = None,
                  tool_turns: ToolTurns | None = None, new_context: Callable[[str], Any] | None = None,
                  ) -> tuple[list[Trajectory], list[AgentStats]]:
    """n multi-turn trajectories per context (context-major). ``tools`` maps names to
    ``tool(arguments, ctx) -> str``; ``new_context(question)`` makes each trajectory's tool state
    (default ``llmrl.research.tools.ToolContext``)."""
    if new_context is None:
        from llmrl.research.tools import ToolContext

        new_context = lambda q: ToolContext(question=q)  # noqa: E731
    tool_turns = tool_turns or ToolTurns(tokenizer)
    questions = questions or [""] * len(contexts)
    trajs = [Trajectory(prompt_ids=list(c)) for c in contexts for _ in range(n)]
    states = [new_context(q) for q in questions for _ in range(n)]
    stats = [AgentStats() for _ in trajs]
    stops = tuple(dict.fromkeys((*sampling.stop, TOOL_CALL_END, ANSWER_END)))
    live = list(range(len(trajs)))
    while live:
        room = {i: limits.max_total_tokens - len(trajs[i].ids) for i in live}
        turn_sampling = replace(sampling, stop=stops, max_new_tokens=max(1, min(sampling.max_new_tokens, max(room.values()))))
        out = engine.generate_tokens([trajs[i].context_ids for i in live], turn_sampling, n=1)
        calls: list[tuple[int, ToolCall]] = []
        for row, i in enumerate(live):
            ids, owner, logps = out.row(row)
            finish = out.finish_reason[row]
            if len(ids) > room[i]:  # over this trajectory's total budget: keep the sampled prefix
                ids, owner, logps, finish = ids[:room[i]], owner[:room[i]], logps[:room[i]], "length"
            trajs[i].extend(ids, POLICY, logps)
            trajs[i].finish_reason = finish
            text = tokenizer.decode(ids, skip_special_tokens=True)   # this turn only, to parse it; never re-encoded
            if ANSWER_END in text:
                stats[i].answered = True
                continue
            if finish == "length" or TOOL_CALL_END not in text:
                continue   # truncated, or ended with neither a call nor an answer: the reward decides
            if stats[i].turns >= limits.max_turns:
                stats[i].malformed = "max_turns"
                continue
            call = parse_tool_call(text, list(tools), limits.max_call_chars)
            if isinstance(call, str):
                stats[i].malformed = call
                continue
            calls.append((i, call))
        results = run_calls([(lambda c=c, i=i: tools[c.name](c.arguments, states[i])) for i, c in calls],
                            limits.tool_timeout_s)
        live = []
        for (i, call), (text, failure) in zip(calls, results):
            stats[i].turns += 1
            stats[i].calls[call.name] += 1
            stats[i].timeouts += failure == "timeout"
            stats[i].errors += failure == "error"
            env = tool_turns.render(text, limits.max_tool_response_tokens)
            room_left = limits.max_total_tokens - len(trajs[i].ids)
            if len(env) >= room_left:   # no room for the result and an answer after it
                trajs[i].finish_reason = "length"
                continue
            trajs[i].extend(env, ENV)
            live.append(i)
    return trajs, stats


def agent_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Step metrics from ``batch.extras['agent']``: means per trajectory, and the shares that
    answered, made a malformed call (ended the trajectory) or met a tool timeout.

    >>> agent_metrics([{"turns": 2, "searches": 1, "browses": 1, "malformed": None, "timeouts": 0,
    ...                 "errors": 0, "answered": True}, {"turns": 0, "searches": 0, "browses": 0,
    ...                 "malformed": "unknown_tool", "timeouts": 1, "errors": 0, "answered": False}])["agent/malformed_frac"]
    0.5
    """
    n = max(1, len(rows))
    out = {f"agent/{k}": sum(r[k] for r in rows) / n for k in ("turns", "searches", "browses", "timeouts", "errors")}
    out["agent/answered_frac"] = sum(bool(r["answered"]) for r in rows) / n
    out["agent/malformed_frac"] = sum(r["malformed"] is not None for r in rows) / n
    return out


class AgentEngine:
    """An engine whose ``generate_tokens`` runs the agent loop over an inner engine: a drop-in
    for the trainer's ``rollout`` phase. Per-row tool statistics go to ``batch.extras['agent']``."""

    def __init__(self, engine, tokenizer, tools: dict[str, Callable], limits: AgentLimits = AgentLimits(),
                 *, tool_role: str = "tool"):
        self.engine, self.tokenizer, self.tools, self.limits = engine, tokenizer, tools, limits
        self.tool_turns = ToolTurns(tokenizer, role=tool_role)
        # An engine cuts over-long contexts to its max_prompt_length (from the start). Later turns
        # are prompt + trajectory, so the inner engine must take max_total_tokens more, or it
        # would sample turn 2 from a cut context while the trainer scores the whole one; the
        # prompt itself is cut here, to the engine's original limit.
        self.max_prompt_length = getattr(engine, "max_prompt_length", None)
        if self.max_prompt_length is not None:
            engine.max_prompt_length = self.max_prompt_length + limits.max_total_tokens

    def encode(self, prompts: list[str]) -> list[list[int]]:
        return self.engine.encode(prompts)

    def sync_weights(self, policy: torch.nn.Module) -> None:
        self.engine.sync_weights(policy)

    def generate_tokens(self, contexts: list[list[int]], sampling: SamplingParams, *, n: int = 1,
                        questions: list[str] | None = None) -> RolloutBatch:
        if self.max_prompt_length is not None:
            contexts = [c[-self.max_prompt_length:] for c in contexts]
        trajs, stats = agent_rollout(self.engine, self.tokenizer, contexts, sampling, self.tools, n=n,
                                     limits=self.limits, questions=questions, tool_turns=self.tool_turns)
        batch = batch_from_trajectories(trajs, pad_id=self.tokenizer.pad_token_id, tokenizer=self.tokenizer,
                                        group_ids=torch.arange(len(contexts)).repeat_interleave(n))
        batch.extras["agent"] = [s.as_dict() for s in stats]
        return batch

    def generate(self, prompts: list[str], sampling: SamplingParams, *, n: int) -> RolloutBatch:
        batch = self.generate_tokens(self.encode(prompts), sampling, n=n, questions=list(prompts))
        batch.prompts = [p for p in prompts for _ in range(n)]
        return batch
