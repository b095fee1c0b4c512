"""Research-agent rewards (TRL signature): DeepResearcher's format + word-F1, an exact-match
variant, and Search-R1's EM + format score.

DeepResearcher (spec ../shared/specs/rewards.md, "Research agent"): -1 when the tags
``think`` / ``tool_call`` / ``answer`` are unbalanced or there is no ``<answer>``; otherwise the
max word-level F1 of the (last) answer over the gold answers. Words: lowercase, punctuation ->
space, a *set* of words, articles kept (that is why "the Rialto Bridge" scores 0.8).
Tool results (``<tool_response>...</tool_response>``, environment text) are removed before the
tags are counted: the environment's text must not break or fix the policy's format.

    >>> research_f1_reward(["q"] * 3, ["<think>x</think><answer>the Rialto Bridge</answer>",
    ...                               "<think>x</think>Rialto", "<answer>Turkey</answer>"],
    ...                    answers=[["Rialto Bridge"], ["Rialto Bridge"], "türkiye<|answer_split|>turkey"])
    [0.8, -1.0, 1.0]
    >>> search_r1_em_reward(["q"] * 2, ["<think>x</think><answer>The Eiffel Tower</answer>", "eiffel tower"],
    ...                     answers=[["Eiffel Tower"], ["Eiffel Tower"]])
    [1.0, 0.0]
"""
from __future__ import annotations

import re
import string
from typing import Literal, Sequence

ANSWER_SPLIT = "<|answer_split|>"
FORMAT_TAGS = ("think", "tool_call", "answer")
_TOOL_RESPONSE = re.compile(r"<tool_response>.*?(</tool_response>|$)", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")

Normalisation = Literal["deepresearcher", "squad"]


def _text(completion) -> str:
    if isinstance(completion, list):  # chat format: the assistant messages' contents
        return "".join(m.get("content") or "" for m in completion if m.get("role") != "tool")
    return completion if isinstance(completion, str) else ""


def policy_text(completion) -> str:
    """The completion without its tool responses (what the policy itself wrote)."""
    return _TOOL_RESPONSE.sub("", _text(completion))


def tags_balanced(text: str, tags: Sequence[str] = FORMAT_TAGS) -> bool:
    """Every ``<tag>`` has as many ``</tag>`` (DeepResearcher's format check)."""
    return all(text.count(f"<{t}>") == text.count(f"</{t}>") for t in tags)


def extract_answer(text: str) -> str | None:
    """Content of the last ``<answer>...</answer>``, or None."""
    found = _ANSWER.findall(text)
    return found[-1] if found else None


def gold_answers(answers) -> list[str]:
    """Gold answers from a list, or one string joined with ``<|answer_split|>``."""
    if isinstance(answers, str):
        return answers.split(ANSWER_SPLIT)
    return [a for item in answers for a in (item.split(ANSWER_SPLIT) if isinstance(item, str) else [str(item)])]


def normalise_words(text: str, normalisation: Normalisation = "deepresearcher") -> list[str]:
    """DeepResearcher: lowercase, punctuation -> space, split. ``squad`` (a documented deviation):
    lowercase, punctuation removed, articles removed (SQuAD's normalize_answer)."""
    text = text.lower()
    if normalisation == "squad":
        return _ARTICLES.sub(" ", _PUNCT.sub("", text)).split()
    return _PUNCT.sub(" ", text).split()


def word_f1(prediction: str, gold: str, normalisation: Normalisation = "deepresearcher") -> float:
    """F1 of the word *sets* (DeepResearcher) or word bags (squad).

    >>> round(word_f1("Paris Paris France", "Paris"), 4), word_f1("U.S.A.", "usa")
    (0.6667, 0.0)
    """
    p, g = normalise_words(prediction, normalisation), normalise_words(gold, normalisation)
    if normalisation == "deepresearcher":
        p, g = list(set(p)), list(set(g))
        common = len(set(p) & set(g))
    else:
        from collections import Counter

        common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the SQuAD-normalised strings are equal (Search-R1's EM)."""
    return float(normalise_words(prediction, "squad") == normalise_words(gold, "squad"))


def research_score(completion, answers, *, metric: Literal["f1", "em"] = "f1",
                   normalisation: Normalisation = "deepresearcher", format_penalty: float = -1.0) -> float:
    """One completion's DeepResearcher score: ``format_penalty`` for unbalanced tags or no answer,
    else the best F1 (or EM) over the gold answers."""
    text = policy_text(completion)
    answer = extract_answer(text)
    if answer is None or not tags_balanced(text):
        return format_penalty
    golds = gold_answers(answers)
    score = (lambda g: word_f1(answer, g, normalisation)) if metric == "f1" else (lambda g: exact_match(answer, g))
    return max((score(g) for g in golds), default=0.0)


def research_f1_reward(prompts, completions, answers, *, normalisation: Normalisation = "deepresearcher",
                       format_penalty: float = -1.0, **kwargs) -> list[float]:
    """DeepResearcher's reward: format penalty, else max word-F1 over ``answers`` (a list per row,
    or one ``<|answer_split|>``-joined string)."""
    return [research_score(c, a, metric="f1", normalisation=normalisation, format_penalty=format_penalty)
            for c, a in zip(completions, answers)]


def research_em_reward(prompts, completions, answers, *, format_penalty: float = -1.0, **kwargs) -> list[float]:
    """As ``research_f1_reward`` with exact match (SQuAD normalisation) instead of F1."""
    return [research_score(c, a, metric="em", format_penalty=format_penalty) for c, a in zip(completions, answers)]


def search_r1_em_reward(prompts, completions, answers, *, format_score: float = 0.0, **kwargs) -> list[float]:
    """Search-R1's outcome reward (qa_em): 1.0 when the last ``<answer>`` exactly matches a gold
    answer, else ``format_score`` when an answer was given (Search-R1's default 0), else 0."""
    out = []
    for c, a in zip(completions, answers):
        answer = extract_answer(policy_text(c))
        if answer is None:
            out.append(0.0)
        elif max((exact_match(answer, g) for g in gold_answers(a)), default=0.0) == 1.0:
            out.append(1.0)
        else:
            out.append(float(format_score))
    return out
