"""Hacking gates: checks a translation must pass before any reward counts it.

RL against a judge or a quality-estimation metric amplifies its blind spots (WALAR, arXiv
2603.13045): output in the wrong language, a copy of the source, empty or truncated output,
padding that repeats the answer. Each gate catches one of these without a judge, and a
translation that fails one gets the reward's lowest score. They compose with any reward:
the translation rewards take ``gates:``, and :func:`gated_reward` wraps any other reward.

Defaults (``Gates()``): language ID on (the detected language must be the target), source-copy
check on, length within [0.5, 1.6] of the exemplar (else the reference, else the source scaled
by the pair's usual length ratio)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmrl.rewards.translation.languages import DEFAULT_CANDIDATES, detect_language, expected_length_ratio
from llmrl.rewards.translation.metrics import chrf


@dataclass(frozen=True)
class Gates:
    """Which gates run, and their bounds (recipe key ``gates:``, a mapping of these fields).

    - ``language``: detected language (lingua, among ``languages`` plus the pair's) must be the
      target; texts shorter than ``language_min_chars`` are not judged (too short to tell).
    - ``copy``: chrF of the translation against the source must stay under ``copy_threshold``
      (0-1) unless the reference is itself that close to the source (names, numbers, code).
    - ``length_ratio``: [low, high] bounds on len(translation) / len(anchor) in characters, each
      plus ``length_slack`` (so short segments are not failed for a character or two); None: off.
    """

    language: bool = True
    languages: tuple[str, ...] = DEFAULT_CANDIDATES
    language_min_chars: int = 8
    copy: bool = True
    copy_threshold: float = 0.6
    length_ratio: tuple[float, float] | None = (0.5, 1.6)
    length_slack: int = 2

    def __post_init__(self):
        if self.length_ratio is not None:
            lo, hi = self.length_ratio
            if not 0 <= lo < hi:
                raise ValueError(f"gates.length_ratio: {list(self.length_ratio)} must be [low, high] with 0 <= low < high")
        if not 0 < self.copy_threshold <= 1:
            raise ValueError(f"gates.copy_threshold: {self.copy_threshold} must be in (0, 1]")

    @classmethod
    def of(cls, spec: "Gates | dict[str, Any] | bool | None") -> "Gates | None":
        """From a recipe value: a mapping of fields, True (defaults), False/None (no gates)."""
        if spec is None or spec is False:
            return None
        if spec is True:
            return cls()
        if isinstance(spec, Gates):
            return spec
        if not isinstance(spec, dict):
            raise ValueError(f"gates: expected a mapping, true or false, got {type(spec).__name__}")
        unknown = set(spec) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"gates: unknown key(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}")
        spec = dict(spec)
        if "languages" in spec:
            spec["languages"] = tuple(spec["languages"])
        if spec.get("length_ratio") is not None:
            spec["length_ratio"] = tuple(spec["length_ratio"])
        return cls(**spec)


def gate_failure(translation: str, *, gates: Gates, source: str | None = None, tgt_lang: str | None = None,
                 src_lang: str | None = None, reference: str | None = None, exemplar: str | None = None) -> str | None:
    """Why ``translation`` fails a gate ('wrong_language:de', 'source_copy', 'too_long', ...),
    or None when it passes all of them."""
    text = translation.strip()
    if not text:
        return "empty"
    if gates.length_ratio is not None:
        anchor, scale = exemplar or reference, 1.0
        if not anchor and source:
            anchor, scale = source, expected_length_ratio(src_lang, tgt_lang)
        if anchor:
            lo, hi = gates.length_ratio
            expected = len(anchor.strip()) * scale
            if len(text) > hi * expected + gates.length_slack:
                return "too_long"
            if len(text) < lo * expected - gates.length_slack:
                return "too_short"
    if gates.copy and source and chrf(text, [source]) / 100 >= gates.copy_threshold:
        if not (reference and chrf(reference, [source]) / 100 >= gates.copy_threshold):
            return "source_copy"
    if gates.language and tgt_lang and len(text) >= gates.language_min_chars:
        found = detect_language(text, tuple(gates.languages) + tuple(c for c in (tgt_lang, src_lang) if c))
        if found is not None and found != tgt_lang.lower():
            return f"wrong_language:{found}"
    return None


def _column(columns: dict[str, Any], name: str, i: int):
    values = columns.get(name)
    return None if values is None else values[i]


def gated_reward(prompts, completions, *, reward: str, reward_args: dict[str, Any] | None = None,
                 gates: dict[str, Any] | bool = True, floor: float = 0.0, **columns):
    """Any reward (registered name or 'module:function'), with the hacking gates in front: a
    completion that fails a gate scores ``floor``; the others keep the wrapped reward's score.
    Reads the ``source``, ``tgt_lang``, ``src_lang``, ``reference`` and ``exemplar`` columns
    where present. Sync rewards only (wrap an async one in its own registered function).

    Recipe: ``{name: translation_gated, args: {reward: reward_model, reward_args: {...}}}``."""
    import inspect

    from llmrl.rewards.registry import resolve_reward
    from llmrl.rewards.types import Scores, completion_text

    gate_set = Gates.of(gates)
    inner = resolve_reward(reward)
    values = inner(prompts, completions, **(reward_args or {}), **columns)
    if inspect.isawaitable(values):
        raise TypeError(f"gated_reward: {reward!r} is async; gate it inside its own function instead")
    details = list(getattr(values, "details", None) or [{} for _ in completions])
    out = list(values)
    for i, completion in enumerate(completions):
        if gate_set is None:
            break
        why = gate_failure(completion_text(completion), gates=gate_set, source=_column(columns, "source", i),
                           tgt_lang=_column(columns, "tgt_lang", i), src_lang=_column(columns, "src_lang", i),
                           reference=_column(columns, "reference", i), exemplar=_column(columns, "exemplar", i))
        if why is not None:
            out[i] = floor
            details[i] = {**(details[i] or {}), "gate": why}
    return Scores(out, details=details)
