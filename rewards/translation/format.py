"""The think-then-translate output format: ``<think>...</think>`` then the translation, nothing
else (no answer tag, no second think block, no trailing notes). A completion that breaks it has
no translation, and every translation reward gives it the lowest score."""
from __future__ import annotations

import re

_THINK_THEN_TEXT = re.compile(r"\s*<think>(?P<think>.*?)</think>(?P<text>.*)", re.DOTALL)
_TAG = re.compile(r"</?\s*(think|answer|translation)\s*>", re.IGNORECASE)
# A translation followed by a blank line and a note about it ("Note: ...", "(Translation notes").
_TRAILING_NOTE = re.compile(r"\n\s*\n\s*\(?\s*(note|notes|explanation|translation note)s?\b", re.IGNORECASE)


def extract_translation(completion: str, *, require_think: bool = True) -> str | None:
    """The translation in ``completion``, or None when the format is broken.

    ``require_think``: the completion must open with a ``<think>...</think>`` block (the
    recipe's format); off, the whole completion is the translation (for models that answer
    directly, such as the tiny recipe's).

    >>> extract_translation("<think>greeting</think> Hallo Welt")
    'Hallo Welt'
    >>> extract_translation("Hallo Welt") is None, extract_translation("<think>x</think>") is None
    (True, True)
    >>> extract_translation("Hallo Welt", require_think=False)
    'Hallo Welt'
    """
    if not isinstance(completion, str):
        return None
    if require_think:
        m = _THINK_THEN_TEXT.fullmatch(completion)
        if m is None:
            return None
        text = m.group("text")
    else:
        text = completion
    text = text.strip()
    if not text or _TAG.search(text) or _TRAILING_NOTE.search(text):
        return None
    return text
