"""Translation prompts: WMT22 general test sets (real data) and a procedural number-words task
(the tiny recipe's), with the columns the translation rewards read: ``source``, ``reference``,
``exemplar``, ``src_lang``, ``tgt_lang`` (and ``answer`` = the reference, for the warm start).

WMT22 (``data.name: wmt22``) reads ``translation/wmt22/generaltest2022.<pair>.jsonl.gz`` from the
first local copy ($LLMRL_DATA_DIR, ../shared/data, the llmrl cache), else sacrebleu's own
download when online. WMT22 is a test set: ``train`` is a fixed half of each direction (by a
hash of the source, the same for every seed) for demos and smoke runs, ``test`` the other half;
a real run trains on its own parallel data (``data.name: file``) and evaluates here.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path
from typing import Any

from llmrl.paths import DataNotFoundError, locate_data

WMT22_PAIRS = ("en-de", "de-en", "en-zh", "zh-en", "en-ru", "ru-en", "en-ja", "ja-en", "de-fr", "fr-de")

INSTRUCTION = ("Translate the following {src_name} text into {tgt_name}. Think first inside <think>...</think>, "
               "then write only the translation.\n\n{source}")


def _bucket(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % 100


def _pairs(directions: str | list[str]) -> list[str]:
    pairs = [d.strip() for d in directions.split(",")] if isinstance(directions, str) else list(directions)
    bad = [p for p in pairs if p not in WMT22_PAIRS]
    if bad or not pairs:
        raise ValueError(f"data.args.directions: {bad or pairs} not WMT22 directions; use some of {', '.join(WMT22_PAIRS)}")
    return pairs


def _read_wmt22(pair: str, source: str) -> list[dict[str, Any]]:
    relative = f"translation/wmt22/generaltest2022.{pair}.jsonl.gz"
    if source not in ("auto", "local", "hub"):
        path = Path(source).expanduser() / f"generaltest2022.{pair}.jsonl.gz"
        if not path.is_file():
            raise DataNotFoundError(f"data.args.source: {path} not found (a folder of generaltest2022.<pair>.jsonl.gz)")
    else:
        path = locate_data(relative, source="local" if source == "local" else "auto", what="WMT22",
                           hub=None if source == "local" else "sacrebleu:wmt22") if source != "hub" else None
    if path is not None:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    return _sacrebleu_wmt22(pair)


def _sacrebleu_wmt22(pair: str) -> list[dict[str, Any]]:
    """WMT22 through sacrebleu's download (online only); the same schema as the local files."""
    try:
        from sacrebleu.dataset import DATASETS

        ds = DATASETS["wmt22"]
        sources, refs = list(ds.source(pair)), list(ds.references(pair))
    except Exception as exc:  # noqa: BLE001 - offline / download errors come in many types
        raise DataNotFoundError(f"WMT22 {pair}: no local copy and sacrebleu could not download it "
                                f"({type(exc).__name__}: {str(exc)[:200]}); set LLMRL_DATA_DIR to a folder holding "
                                "translation/wmt22/") from None
    src_lang, tgt_lang = pair.split("-")
    out = []
    for i, (s, r) in enumerate(zip(sources, refs), start=1):
        r = [r] if isinstance(r, str) else list(r)
        out.append({"id": i, "pair": pair, "src_lang": src_lang, "tgt_lang": tgt_lang, "src": s, "ref": r[0],
                    "refs": dict(zip("ABCD", r))})
    return out


def load_exemplars(path: str | Path) -> dict[tuple[str, str], str]:
    """``(tgt_lang, source) -> exemplar`` from a JSON Lines file of ``{source, tgt_lang,
    exemplar}`` (what ``llmrl exemplars build`` writes)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"data.args.exemplars: {path} not found (build it with `llmrl exemplars build`)")
    out = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[(row["tgt_lang"], row["source"])] = row["exemplar"]
            except (ValueError, KeyError) as exc:
                raise ValueError(f"data.args.exemplars: {path} line {n} is not a {{source, tgt_lang, exemplar}} "
                                 f"record ({type(exc).__name__}: {exc})") from None
    return out


def wmt22_dataset(split: str = "test", n: int | None = None, seed: int = 0, *, directions: str | list[str] = "en-de",
                  source: str = "auto", instruction: str = INSTRUCTION, exemplars: str | None = None,
                  exemplar_from_reference_b: bool = False, train_fraction: float = 0.5):
    """WMT22 rows for ``directions`` (``"en-zh"`` or ``"en-de,de-en"``), in file order per
    direction (``n`` rows in all, shared evenly by the directions: the first ones of the split,
    the same for every seed).

    ``exemplars``: a JSON Lines file from ``llmrl exemplars build``; ``exemplar_from_reference_b``:
    use WMT's second human reference as the exemplar where there is one (en-de, de-en, en-zh,
    zh-en). ``instruction``: the prompt template (``{source}``, ``{src_name}``, ``{tgt_name}``).

    Columns: ``prompt``, ``source``, ``reference`` (translator A), ``exemplar`` (None where
    there is none), ``answer`` (= reference), ``src_lang``, ``tgt_lang``, ``pair``, ``id``.
    """
    from datasets import Dataset

    from llmrl.rewards.translation.languages import name_of

    del seed  # rows do not depend on it (see the docstring)
    if split not in ("train", "test"):
        raise ValueError(f"WMT22 split={split!r}: use 'train' or 'test'")
    if not 0 <= train_fraction < 1:
        raise ValueError(f"data.args.train_fraction: {train_fraction} must be in [0, 1)")
    table = load_exemplars(exemplars) if exemplars else {}
    cols: dict[str, list] = {k: [] for k in ("prompt", "source", "reference", "exemplar", "answer", "src_lang",
                                             "tgt_lang", "pair", "id")}
    pairs = _pairs(directions)
    per_pair = None if n is None else -(-n // len(pairs))  # n in all, shared evenly by the directions
    for pair in pairs:
        taken = 0
        for r in _read_wmt22(pair, source):
            in_train = _bucket(f"{pair}/{r['src']}") < round(100 * train_fraction)
            if in_train != (split == "train"):
                continue
            ex = table.get((r["tgt_lang"], r["src"]))
            if ex is None and exemplar_from_reference_b:
                ex = r.get("refs", {}).get("B")
            cols["prompt"].append(instruction.format(source=r["src"], src_name=name_of(r["src_lang"]),
                                                     tgt_name=name_of(r["tgt_lang"])))
            cols["source"].append(r["src"])
            cols["reference"].append(r["ref"])
            cols["answer"].append(r["ref"])
            cols["exemplar"].append(ex)
            for k in ("src_lang", "tgt_lang", "pair", "id"):
                cols[k].append(r[k])
            taken += 1
            if per_pair is not None and taken >= per_pair:
                break
    return Dataset.from_dict(cols)


# ---------------------------------------------------------------- the tiny recipe's task
def number_words_dataset(split: str = "train", n: int | None = None, seed: int = 0, *, src_lang: str = "en",
                         tgt_lang: str = "fr", max_value: int = 999, separator: str = "=",
                         test_share: int = 20):
    """Numbers written out in one language, to be written out in another: ``"two hundred and
    thirty-four="`` -> ``"deux cent trente-quatre"`` (num2words makes both sides), from 1 to
    ``max_value`` (0 is "zéro": not ASCII). Plain ASCII
    for en / fr, so the tiny character-level model can read and write it. The exemplar is the
    num2words translation (a perfect "strong model"), the reference the same.

    Splits by a hash of the number: ``test_share`` of 100 buckets are test, the rest train (the
    same whatever the seed). ``n`` rows drawn with ``seed`` (all when None or larger).

    >>> ds = number_words_dataset("train", 2, seed=0)
    >>> sorted(ds.column_names)
    ['answer', 'exemplar', 'prompt', 'reference', 'source', 'src_lang', 'tgt_lang']
    >>> number_words_dataset("test", None, max_value=99)["prompt"][0].endswith("=")
    True
    """
    from datasets import Dataset
    from num2words import num2words

    if split not in ("train", "test", "validation"):
        raise ValueError(f"number_words split={split!r}: use 'train' or 'test'")
    if max_value < 1 or not 0 < test_share < 100:
        raise ValueError(f"data.args: need max_value >= 1 and 0 < test_share < 100, got {max_value}, {test_share}")
    values = [v for v in range(1, max_value + 1) if (_bucket(f"number/{v}") < test_share) == (split != "train")]
    rng = random.Random(f"number_words/{split}/{seed}")
    rng.shuffle(values)
    if n is not None:
        values = values[:n]
    try:
        src = [num2words(v, lang=src_lang) for v in values]
        tgt = [num2words(v, lang=tgt_lang) for v in values]
    except NotImplementedError as exc:
        raise ValueError(f"data.args.src_lang / tgt_lang: num2words has no such language ({exc})") from None
    return Dataset.from_dict({"prompt": [s + separator for s in src], "source": src, "reference": tgt,
                              "exemplar": tgt, "answer": tgt, "src_lang": [src_lang] * len(values),
                              "tgt_lang": [tgt_lang] * len(values)})
