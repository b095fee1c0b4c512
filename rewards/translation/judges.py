"""Judges that compare a policy translation with an exemplar (ExTrans), behind one interface.

A judge gets :class:`Comparison` rows and returns one :class:`Verdict` each: ``better`` /
``equal`` / ``worse`` (``scale: verdict``) or a grade 1-5 (``scale: grade``), or an error
(unparsable judge output, a failed request) that the reward scores as a failure and logs.

Backends (``backend:`` in the reward's args, their settings under ``backend_args:``):

- ``metric``: a reference metric (chrF by default) of the candidate against the reference,
  compared with the same metric of the exemplar. ``verdict``: better / worse when the two differ
  by more than ``margin`` points, else equal; ``grade``: 1 + 4 * min(1, cand / exemplar),
  rounded. Needs a ``reference`` column. No model, no network: the default.
- ``openai``: any OpenAI-compatible chat-completions server (``vllm serve``, a hosted API),
  through :class:`llmrl.rewards.chat_client.ChatClient` (concurrency cap, timeout, retries with
  backoff on 429/5xx, disk cache).
- ``hf``: a local transformers causal LM, greedy, in a worker thread.

The judge prompt is a template with ``{source}``, ``{candidate}``, ``{exemplar}``,
``{reference}``, ``{src_name}``, ``{tgt_name}`` (``prompt:`` in the reward's args).
"""
from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from llmrl.rewards.translation.languages import name_of
from llmrl.rewards.translation.metrics import segment_metric

SCALES = ("verdict", "grade")
LABELS = ("better", "equal", "worse")

DEFAULT_PROMPT = {
    "verdict": (
        "You are judging translations from {src_name} to {tgt_name}.\n"
        "Source:\n{source}\n\nTranslation A:\n{candidate}\n\nTranslation B:\n{exemplar}\n\n"
        "Is translation A better than, equal to, or worse than translation B in accuracy and fluency? "
        "Answer with one word: better, equal or worse."),
    "grade": (
        "You are judging a translation from {src_name} to {tgt_name} against a strong reference "
        "translation.\nSource:\n{source}\n\nReference translation:\n{exemplar}\n\nCandidate translation:\n"
        "{candidate}\n\nGrade the candidate from 1 (unusable) to 5 (as good as or better than the reference). "
        "Answer with the number only."),
}


@dataclass(frozen=True)
class Comparison:
    """One policy translation (``candidate``) to judge against the ``exemplar`` for ``source``."""

    source: str
    candidate: str
    exemplar: str
    reference: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None


@dataclass(frozen=True)
class Verdict:
    """``label``: 'better' / 'equal' / 'worse' or a grade 1-5; None with ``error`` set when the
    judge gave nothing usable. ``raw``: the judge's text (for the samples log)."""

    label: str | int | None
    error: str | None = None
    raw: str | None = None


class Judge(Protocol):
    scale: str

    async def judge(self, rows: list[Comparison]) -> list[Verdict]: ...


_WORD = re.compile(r"\b(better|equal|worse)\b", re.IGNORECASE)
_GRADE = re.compile(r"(?<![\d.])([1-5])(?![\d.])")


def parse_verdict(text: str, scale: str) -> Verdict:
    """The verdict in a judge's reply: the first of better/equal/worse (``verdict``), or the
    first lone digit 1-5 (``grade``); anything else is a parse error.

    >>> parse_verdict("Better.", "verdict").label, parse_verdict("Grade: 4/5", "grade").label
    ('better', 4)
    >>> parse_verdict("I cannot tell", "verdict").error
    'unparsable judge output'
    """
    m = (_WORD if scale == "verdict" else _GRADE).search(text or "")
    if m is None:
        return Verdict(None, error="unparsable judge output", raw=text)
    label = m.group(1).lower() if scale == "verdict" else int(m.group(1))
    return Verdict(label, raw=text)


def render_prompt(template: str, row: Comparison) -> str:
    """The judge prompt for one row; an unknown ``{field}`` is a ValueError naming it."""
    fields = {"source": row.source, "candidate": row.candidate, "exemplar": row.exemplar,
              "reference": row.reference or "", "src_name": name_of(row.src_lang or ""),
              "tgt_name": name_of(row.tgt_lang or "")}
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"rewards.args.prompt: unknown field {exc} in the judge template; allowed: "
                         f"{', '.join('{' + k + '}' for k in fields)}") from None


def _check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise ValueError(f"rewards.args.scale: {scale!r} is not one of {SCALES}")


class MetricJudge:
    """metric(candidate, reference) vs metric(exemplar, reference); see the module docstring."""

    def __init__(self, *, metric: str = "chrf", scale: str = "verdict", margin: float = 1.0):
        _check_scale(scale)
        self.score = segment_metric(metric)
        self.metric, self.scale, self.margin = metric, scale, margin

    def one(self, row: Comparison) -> Verdict:
        if not row.reference:
            return Verdict(None, error="no reference for the metric judge")
        cand = self.score(row.candidate, [row.reference], row.source, row.tgt_lang)
        ex = self.score(row.exemplar, [row.reference], row.source, row.tgt_lang)
        raw = f"{self.metric} {cand:.2f} vs exemplar {ex:.2f}"
        if self.scale == "grade":
            return Verdict(1 + round(4 * min(1.0, cand / ex)) if ex > 0 else (5 if cand > 0 else 1), raw=raw)
        label = "better" if cand > ex + self.margin else "worse" if cand < ex - self.margin else "equal"
        return Verdict(label, raw=raw)

    async def judge(self, rows: list[Comparison]) -> list[Verdict]:
        return [self.one(r) for r in rows]


class ChatJudge:
    """An OpenAI-compatible chat model as the judge (one request per row, concurrently)."""

    def __init__(self, *, prompt: str | None = None, scale: str = "verdict", temperature: float = 0.0,
                 max_tokens: int = 16, **client_args: Any):
        from llmrl.rewards.chat_client import ChatClient

        _check_scale(scale)
        self.scale, self.template = scale, prompt or DEFAULT_PROMPT[scale]
        self.params = {"temperature": temperature, "max_tokens": max_tokens}
        self.client = ChatClient(**client_args)

    async def _one(self, row: Comparison) -> Verdict:
        from llmrl.rewards.chat_client import ChatError

        try:
            text = await self.client.complete([{"role": "user", "content": render_prompt(self.template, row)}],
                                              **self.params)
        except ChatError as exc:
            return Verdict(None, error=f"judge request failed: {exc}")
        return parse_verdict(text, self.scale)

    async def judge(self, rows: list[Comparison]) -> list[Verdict]:
        from llmrl.rewards.runner import is_reward_event_loop

        try:
            return list(await asyncio.gather(*(self._one(r) for r in rows)))
        finally:
            # The reward runner's loop lives as long as the process and keeps its session (one
            # connection pool for every batch); any other loop (``asyncio.run(exemplar_reward(
            # ...))``) ends with this call, and a session left on it leaks its connections.
            if not is_reward_event_loop(asyncio.get_running_loop()):
                await self.client.aclose()


class HFJudge:
    """A local transformers causal LM as the judge: greedy replies to the rendered prompts (with
    the tokenizer's chat template when it has one), batched, in a worker thread."""

    def __init__(self, *, model: str, prompt: str | None = None, scale: str = "verdict", device: str = "cpu",
                 max_new_tokens: int = 8, batch_size: int = 8):
        _check_scale(scale)
        self.scale, self.template = scale, prompt or DEFAULT_PROMPT[scale]
        self.model_name, self.device = model, device
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        self._lock = threading.Lock()
        self._loaded = None

    def _load(self):
        with self._lock:
            if self._loaded is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                try:
                    tok = AutoTokenizer.from_pretrained(self.model_name)
                    net = AutoModelForCausalLM.from_pretrained(self.model_name).to(self.device).eval()
                except (OSError, ValueError) as exc:
                    raise ValueError(f"rewards.args.backend_args.model: cannot load {self.model_name!r} as a causal "
                                     f"LM ({type(exc).__name__}: {exc})") from None
                tok.padding_side = "left"
                if tok.pad_token is None:
                    tok.pad_token = tok.eos_token
                self._loaded = (net, tok)
            return self._loaded

    def replies(self, prompts: list[str]) -> list[str]:
        import torch

        net, tok = self._load()
        if getattr(tok, "chat_template", None):
            prompts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            enc = tok(prompts[i:i + self.batch_size], return_tensors="pt", padding=True,
                      add_special_tokens=not getattr(tok, "chat_template", None)).to(self.device)
            with torch.no_grad():
                gen = net.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                   pad_token_id=tok.pad_token_id)
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    async def judge(self, rows: list[Comparison]) -> list[Verdict]:
        texts = await asyncio.to_thread(self.replies, [render_prompt(self.template, r) for r in rows])
        return [parse_verdict(t, self.scale) for t in texts]


BACKENDS = {"metric": MetricJudge, "openai": ChatJudge, "hf": HFJudge}
_JUDGES: dict[tuple, Judge] = {}
_JUDGES_LOCK = threading.Lock()


def make_judge(backend: str, *, scale: str = "verdict", prompt: str | None = None,
               **backend_args: Any) -> Judge:
    """The judge for ``backend`` with these settings, built once per process (a chat judge keeps
    its session and cache; an HF judge its weights)."""
    if backend not in BACKENDS:
        raise ValueError(f"rewards.args.backend: {backend!r} is not one of {sorted(BACKENDS)}")
    args = dict(backend_args, scale=scale)
    if backend != "metric":
        args["prompt"] = prompt
    elif prompt is not None:
        raise ValueError("rewards.args.prompt: the metric backend uses no prompt; drop the key or pick "
                         "backend: openai / hf")
    key = (backend, repr(sorted(args.items())))
    with _JUDGES_LOCK:
        if key not in _JUDGES:
            try:
                _JUDGES[key] = BACKENDS[backend](**args)
            except TypeError as exc:
                raise ValueError(f"rewards.args.backend_args: {exc} (backend {backend!r})") from None
        return _JUDGES[key]
