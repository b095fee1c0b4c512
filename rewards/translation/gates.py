"""Hacking gates: checks a translation must pass before any reward counts it.

RL against a judge or a quality-estimation metric amplifies its blind spots (WALAR, arXiv
2603.13045): output in the wrong language, a copy of the source, empty or truncated output,
padding that repeats the answer. Each gate catches one of these without a judge, and a
translation that fails one gets the reward's lowest score. They compose with any reward:
the translation rewards take ``gates:``, and :func:`gated_reward` wraps any other reward.

Defaults (``Gates()``): language ID on (lingua must give the target language at least 0.2 of
its confidence), source-copy check on, length within [0.5, 1.6] of the exemplar (else the
reference; else [0.4, 2.2] of the source scaled by the pair's usual length ratio).

Measured on WMT22 references (the first 300 segments of each of the 10 directions, the other
reference as exemplar where there is one): the gates pass 97-100% of genuine translations; the
misses are short e-commerce titles ("#Product1# out now!") and references much longer than
the exemplar."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmrl.rewards.translation.languages import DEFAULT_CANDIDATES, expected_length_ratio, language_confidence
from llmrl.rewards.translation.metrics import chrf


@dataclass(frozen=True)
class Gates:
    """Which gates run, and their bounds (recipe key ``gates:``, a mapping of these fields).

    - ``language``: lingua's confidence (among ``languages`` plus the pair's) that the text is
      in the target language must be at least ``language_threshold``; a plain "detected language
      == target" test fails short English titles as German ("LG has a prettier red.": de 0.41,
      en 0.34), while a real wrong-language output leaves the target near 0. Texts shorter than
      ``language_min_chars`` are not judged (too short to tell).
    - ``copy``: chrF of the translation against the source must stay under ``copy_threshold``
      (0-1) unless the reference or exemplar is itself that close to the source (names,
      numbers, product codes).
    - ``repeat``: fails a text in which one stretch of at least ``repeat_fraction`` of its
      length (and 10 characters) occurs twice without overlap: the answer padded with itself,
      which a length bound relative to a longer exemplar can miss.
    - ``length_ratio``: [low, high] bounds on len(translation) / len(anchor) in characters when
      the anchor is the exemplar or the reference; ``source_length_ratio`` when it is the source
      (scaled by the languages' usual ratio, a looser guess). Each bound gets ``length_slack``
      characters (short segments are not failed for a character or two); None: off.
    """

    language: bool = True
    languages: tuple[str, ...] = DEFAULT_CANDIDATES
    language_min_chars: int = 8
    language_threshold: float = 0.2
    copy: bool = True
    copy_threshold: float = 0.6
    length_ratio: tuple[float, float] | None = (0.5, 1.6)
    source_length_ratio: tuple[float, float] | None = (0.4, 2.2)
    length_slack: int = 3
    repeat: bool = True
    repeat_fraction: float = 0.3

    def __post_init__(self):
        for key in ("length_ratio", "source_length_ratio"):
            bounds = getattr(self, key)
            if bounds is not None and not (len(bounds) == 2 and 0 <= bounds[0] < bounds[1]):
                raise ValueError(f"gates.{key}: {list(bounds)} must be [low, high] with 0 <= low < high")
        if not 0 <= self.language_threshold <= 1:
            raise ValueError(f"gates.language_threshold: {self.language_threshold} must be in [0, 1]")
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
        for key in ("length_ratio", "source_length_ratio"):
            if spec.get(key) is not None:
                spec[key] = tuple(spec[key])
        return cls(**spec)


def repeats_itself(text: str, fraction: float = 0.3, min_chars: int = 10) -> bool:
    """Whether a stretch of ``max(min_chars, fraction * len(text))`` characters occurs twice in
    ``text`` without overlapping.

    >>> repeats_itself("Ich hoffe, Sie finden eine Lösung. Ich hoffe, Sie finden eine Lösung.")
    True
    >>> repeats_itself("Ich hoffe wirklich, dass Sie eine Lösung finden werden")
    False
    """
    width = max(min_chars, int(fraction * len(text)))
    first: dict[str, int] = {}
    for i in range(len(text) - width + 1):
        window = text[i:i + width]
        j = first.setdefault(window, i)
        if i - j >= width:
            return True
    return False


def gate_failure(translation: str, *, gates: Gates, source: str | None = None, tgt_lang: str | None = None,
                 src_lang: str | None = None, reference: str | None = None, exemplar: str | None = None) -> str | None:
    """Why ``translation`` fails a gate ('wrong_language:de', 'source_copy', 'too_long', ...),
    or None when it passes all of them."""
    text = translation.strip()
    if not text:
        return "empty"
    anchor, scale, bounds = exemplar or reference, 1.0, gates.length_ratio
    if not anchor and source:
        anchor, scale, bounds = source, expected_length_ratio(src_lang, tgt_lang), gates.source_length_ratio
    if bounds is not None and gates.length_ratio is not None:
        if anchor:
            lo, hi = bounds
            expected = len(anchor.strip()) * scale
            if len(text) > hi * expected + gates.length_slack:
                return "too_long"
            if len(text) < lo * expected - gates.length_slack:
                return "too_short"
    if gates.repeat and repeats_itself(text, gates.repeat_fraction):
        return "repeated"
    if gates.copy and source and chrf(text, [source]) / 100 >= gates.copy_threshold:
        if not any(t and chrf(t, [source]) / 100 >= gates.copy_threshold for t in (reference, exemplar)):
            return "source_copy"
    if gates.language and tgt_lang and len(text) >= gates.language_min_chars:
        conf, top = language_confidence(text, tgt_lang, tuple(gates.languages) + ((src_lang,) if src_lang else ()))
        if conf < gates.language_threshold:
            return f"wrong_language:{top}"
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
