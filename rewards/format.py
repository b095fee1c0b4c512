"""Small format rewards (TRL signature), meant to be added with a low weight to a task reward.

    >>> think_answer_format_reward(["q", "q"], ["<think>2+2</think><answer>4</answer>", "4"])
    [1.0, 0.0]
    >>> boxed_format_reward(["q", "q"], ["so \\\\boxed{4}", "4"])
    [1.0, 0.0]
"""
from __future__ import annotations

import re

_THINK_ANSWER = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_BOXED = re.compile(r"\\boxed\s*\{.*\}", re.DOTALL)


def _text(completion) -> str:
    if isinstance(completion, list):  # chat format: the last message's content
        completion = completion[-1].get("content") if completion else ""
    return completion if isinstance(completion, str) else ""


def think_answer_format_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the whole completion is ``<think>...</think>`` then ``<answer>...</answer>``."""
    return [float(_THINK_ANSWER.fullmatch(_text(c)) is not None) for c in completions]


def boxed_format_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the completion contains a ``\\boxed{...}`` answer."""
    return [float(_BOXED.search(_text(c)) is not None) for c in completions]
