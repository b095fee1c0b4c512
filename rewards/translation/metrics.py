"""Reference metrics on one segment: chrF and BLEU through sacrebleu (BLEU with the target
language's tokenizer), COMET / CometKiwi when ``unbabel-comet`` and its weights are there.

Scores are on sacrebleu's 0-100 scale here; the rewards divide by 100."""
from __future__ import annotations

import functools
import os
from typing import Callable

from llmrl.rewards.translation.languages import bleu_tokenizer

METRICS = ("chrf", "bleu", "comet", "cometkiwi")


@functools.cache
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


@functools.cache
def _bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    # effective_order: sentence BLEU without it is 0 for any segment missing a 4-gram match
    return BLEU(tokenize=tokenize, effective_order=True)


def chrf(hypothesis: str, references: list[str]) -> float:
    """Sentence chrF (0-100); tokenization-free, so the same for every language.

    >>> chrf("Hallo Welt", ["Hallo Welt"])
    100.0
    """
    return float(_chrf().sentence_score(hypothesis, references).score)


def bleu(hypothesis: str, references: list[str], tgt_lang: str | None = None) -> float:
    """Sentence BLEU (0-100) with the tokenizer for ``tgt_lang`` (see :func:`bleu_tokenizer`)."""
    return float(_bleu(bleu_tokenizer(tgt_lang)).sentence_score(hypothesis, references).score)


@functools.cache
def _comet(model: str):
    try:
        from comet import download_model, load_from_checkpoint
    except ImportError as exc:
        raise ImportError("COMET needs the comet extra: pip install 'llmrl[comet]' (unbabel-comet)") from exc
    path = model if os.path.exists(model) else download_model(model)  # offline: pass a local checkpoint
    return load_from_checkpoint(path)


def comet(hypotheses: list[str], sources: list[str], references: list[str] | None, *,
          model: str | None = None) -> list[float]:
    """COMET (with references) or CometKiwi (``references=None``) segment scores, scaled 0-100.

    ``model``: a checkpoint path or hub name; default ``$LLMRL_COMET_MODEL``, else
    Unbabel/wmt22-comet-da (Unbabel/wmt22-cometkiwi-da without references)."""
    default = "Unbabel/wmt22-comet-da" if references is not None else "Unbabel/wmt22-cometkiwi-da"
    scorer = _comet(model or os.environ.get("LLMRL_COMET_MODEL") or default)
    rows = [{"src": s, "mt": h, **({"ref": r} if references is not None else {})}
            for s, h, r in zip(sources, hypotheses, references or [None] * len(hypotheses))]
    out = scorer.predict(rows, batch_size=16, gpus=0, progress_bar=False)
    return [100.0 * float(v) for v in out.scores]


def segment_metric(name: str) -> Callable[[str, list[str], str | None, str | None], float]:
    """``f(hypothesis, references, source, tgt_lang) -> 0-100`` for ``chrf``, ``bleu``, ``comet``
    or ``cometkiwi`` (reference-free: ignores ``references``)."""
    if name == "chrf":
        return lambda hyp, refs, src, lang: chrf(hyp, refs)
    if name == "bleu":
        return lambda hyp, refs, src, lang: bleu(hyp, refs, lang)
    if name == "comet":
        return lambda hyp, refs, src, lang: comet([hyp], [src or ""], [refs[0]])[0]
    if name == "cometkiwi":
        return lambda hyp, refs, src, lang: comet([hyp], [src or ""], None)[0]
    raise ValueError(f"metric: {name!r} is not one of {METRICS}")
