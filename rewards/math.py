"""Math answer reward: extract the final answer, check it against the gold one by equivalence.

Extraction order (``extract_final_answer``): the last ``\\boxed{...}`` (or ``\\fbox{...}``),
else the text after the last ``####`` (GSM8K style), else the last number in the text.
Comparison: plain integers compare exactly (fast path, no sympy); everything else goes through
math-verify (``1/2`` == ``0.5`` == ``\\frac{1}{2}``).

Threads: math-verify bounds its sympy work with ``signal.alarm``, which only works in the
main thread. Called from the main thread we keep its timeouts; from any other thread (the
trainer scores rewards in a worker pool) we pass ``parsing_timeout=None`` /
``timeout_seconds=None`` and rely on the trainer's per-reward timeout instead. Extracted
answers longer than ``MAX_ANSWER_CHARS`` score 0.0 without calling sympy, which keeps the
untimed path bounded for what a policy can realistically emit.

Example:
    >>> math_reward(["q"] * 3, ["so \\\\boxed{\\\\frac{1}{2}}", "#### 1,234", "I think 7."],
    ...             answer=["0.5", "1234", "8"])
    [1.0, 1.0, 0.0]
"""
from __future__ import annotations

import logging
import re
import threading

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 200

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Last number: thousands-separated, plain, decimal, or a simple fraction; optional sign.
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_INT = re.compile(r"[-+]?\d+")


def _last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} with balanced braces, or None."""
    matches = list(_BOXED.finditer(text))
    for m in reversed(matches):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[m.end():i - 1].strip()
    return None


def extract_final_answer(text: str | None) -> str | None:
    """The final answer of a solution text, or None when there is none.

    >>> extract_final_answer("so the answer is \\\\boxed{\\\\frac{3}{4}}.")
    '\\\\frac{3}{4}'
    >>> extract_final_answer("48/2 = 24\\n#### 72")
    '72'
    >>> extract_final_answer("It costs $1,200 in total.")
    '1200'
    >>> extract_final_answer("no digits here") is None
    True
    """
    if not text:
        return None
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip().splitlines()
        answer = tail[0].strip() if tail else ""
        answer = answer.replace(",", "").replace("$", "").rstrip(".").strip()
        if answer:
            return answer
    numbers = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "")
    return None


def _as_int(s: str) -> int | None:
    s = s.replace(",", "").replace("$", "").strip().rstrip(".")
    return int(s) if _INT.fullmatch(s) else None


def _completion_text(completion) -> str | None:
    """Plain text of a completion: a string, or chat messages (TRL conversational format)."""
    if completion is None or isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    messages = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
    if not messages:
        return None
    content = messages[-1].get("content")
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


def _math_verify_equal(gold: str, pred: str) -> bool:
    import math_verify
    from math_verify import grader, parser

    # We choose the untimed path deliberately off the main thread (see module docstring);
    # silence math-verify's one-time warning about it.
    parser.TIMEOUT_WARNING_SHOWN = grader.TIMEOUT_WARNING_SHOWN = True
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    # Wrap in $...$ so LaTeX (\frac{1}{2}) and plain expressions (1/2, 0.5) both parse.
    gold_parsed = math_verify.parse(f"${gold}$", parsing_timeout=timeout)
    pred_parsed = math_verify.parse(f"${pred}$", parsing_timeout=timeout)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=timeout))


def is_equivalent(gold: str, pred: str) -> bool:
    """Whether two final answers are mathematically equal (exact for integers, else math-verify).

    >>> is_equivalent("0.5", "1/2"), is_equivalent("72", "72.0"), is_equivalent("3", "4")
    (True, True, False)
    """
    gold, pred = str(gold).strip(), str(pred).strip()
    g, p = _as_int(gold), _as_int(pred)
    if g is not None and p is not None:
        return g == p
    if len(pred) > MAX_ANSWER_CHARS or len(gold) > MAX_ANSWER_CHARS:
        return False
    try:
        return _math_verify_equal(gold, pred)
    except Exception as e:  # a verifier failure is a wrong answer, never a crashed step
        log.debug("math-verify failed on gold=%r pred=%r: %r", gold, pred, e)
        return False


def math_reward(prompts, completions, answer, **kwargs) -> list[float | None]:
    """1.0 when a completion's final answer equals the gold ``answer``, else 0.0 (TRL signature).

    Args:
        prompts: unused (kept for the TRL reward-function signature).
        completions: strings, or chat-format lists of ``{"role", "content"}`` messages (the
            last assistant message is scored).
        answer: gold answers, one per completion (dataset column ``answer``): a number or an
            expression such as ``"72"``, ``"\\\\frac{1}{2}"``, ``"0.5"``. A gold answer that is
            itself a worked solution ending in ``#### x`` is reduced to ``x``.

    Returns:
        One score per completion: 1.0 / 0.0, or None where the gold answer is None (not
        applicable). A missing completion or one without an extractable answer scores 0.0.
    """
    scores: list[float | None] = []
    for completion, gold in zip(completions, answer, strict=True):
        if gold is None:
            scores.append(None)
            continue
        gold = str(gold)
        if "####" in gold or "\\boxed" in gold:
            gold = extract_final_answer(gold) or gold
        pred = extract_final_answer(_completion_text(completion))
        scores.append(float(pred is not None and is_equivalent(gold, pred)))
    return scores
