"""The reward contract, shared with TRL: ``reward(prompts, completions, **columns) -> list[float | None]``.

A reward may return a ``Scores`` (a plain list subclass, so TRL accepts it unchanged) carrying
per-sample ``details`` (outcome, error kind, verdict) that llmrl writes to samples.jsonl."""
from __future__ import annotations

from typing import Any


class Scores(list):
    """A list of float | None with per-sample details attached.

    >>> s = Scores([1.0, 0.0], details=[{"outcome": "pass"}, {"outcome": "wrong_answer"}])
    >>> s, s.details[1]["outcome"]
    ([1.0, 0.0], 'wrong_answer')
    """

    def __init__(self, values=(), *, details: list[dict[str, Any]] | None = None):
        super().__init__(values)
        self.details = details if details is not None else [{} for _ in self]


def completion_text(completion: Any) -> str:
    """Completions are strings, or chat messages (TRL conversational format): use the last
    assistant content."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)
