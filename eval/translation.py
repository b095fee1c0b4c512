"""Corpus BLEU and chrF per translation direction, with bootstrap confidence intervals.

``llmrl eval translation`` translates WMT22 (or reads a hypotheses file) and reports, per
direction, sacrebleu's corpus BLEU (with the target language's tokenizer: ``zh`` for Chinese,
``ja-mecab`` for Japanese when installed) and chrF, each with a 95% bootstrap interval over
segments (resampled with replacement, ``reps`` times), plus COMET when ``unbabel-comet`` and
its weights are there (``--comet``).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def corpus_scores(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str) -> dict[str, float]:
    """Corpus BLEU and chrF (0-100) of ``hyps`` against one reference each.

    >>> s = corpus_scores(["Ich hoffe, Sie finden eine Lösung."], ["Ich hoffe, Sie finden eine Lösung."], "de")
    >>> round(s["bleu"]), s["chrf"]
    (100, 100.0)
    """
    from sacrebleu.metrics import BLEU, CHRF

    from llmrl.rewards.translation.languages import bleu_tokenizer

    bleu = BLEU(tokenize=bleu_tokenizer(tgt_lang)).corpus_score(list(hyps), [list(refs)]).score
    return {"bleu": float(bleu), "chrf": float(CHRF().corpus_score(list(hyps), [list(refs)]).score)}


def bootstrap_ci(hyps: Sequence[str], refs: Sequence[str], tgt_lang: str, *, reps: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """Each corpus metric with its percentile bootstrap interval over segments:
    ``{"bleu": {"score", "low", "high"}, "chrf": {...}}``."""
    rng = np.random.default_rng(seed)
    point = corpus_scores(hyps, refs, tgt_lang)
    n = len(hyps)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(reps):
        idx = rng.integers(0, n, n)
        s = corpus_scores([hyps[i] for i in idx], [refs[i] for i in idx], tgt_lang)
        for k in point:
            draws[k].append(s[k])
    a = (1 - confidence) / 2
    return {k: {"score": round(point[k], 2), "low": round(float(np.quantile(draws[k], a)), 2),
                "high": round(float(np.quantile(draws[k], 1 - a)), 2)} for k in point}


def report(rows: Sequence[dict[str, Any]], hyps: Sequence[str], *, reps: int = 1000, comet: bool = False) -> dict:
    """Per direction (``pair`` of each row): segments, BLEU and chrF with CIs, COMET if asked."""
    by_pair: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_pair.setdefault(r["pair"], []).append(i)
    out = {}
    for pair, idx in by_pair.items():
        h, refs = [hyps[i] for i in idx], [rows[i]["reference"] for i in idx]
        entry: dict[str, Any] = {"segments": len(idx), **bootstrap_ci(h, refs, rows[idx[0]]["tgt_lang"], reps=reps)}
        if comet:
            from llmrl.rewards.translation.metrics import comet as comet_scores

            entry["comet"] = round(float(np.mean(comet_scores(h, [rows[i]["source"] for i in idx], refs))), 2)
        out[pair] = entry
    return out
