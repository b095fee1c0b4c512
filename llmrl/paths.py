"""Where things live on disk: local copies of benchmark data, and the cache of built models.

Benchmark data is read in place, never copied into the repo. :func:`find_local_data` is the one
lookup every loader uses; a relative path such as ``gsm8k/train.jsonl`` is searched, in order, in

1. ``$LLMRL_DATA_DIR`` (when set),
2. ``../shared/data`` next to the repository checkout (:data:`SHARED_DATA_DIR`),
3. ``data/`` in the llmrl cache (``$LLMRL_CACHE_DIR``, default ``~/.cache/llmrl``).

Loaders take ``source="auto"`` (the default: the first local copy, else the Hugging Face hub
through :func:`load_hub_dataset`), ``"local"`` (local copies only) or ``"hub"`` (hub only).
When nothing is found, :class:`DataNotFoundError` names every place looked and the fix."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The shared data folder next to the checkout (``None`` switches this fallback off).
SHARED_DATA_DIR: Path | None = REPO_ROOT.parent / "shared" / "data"
SOURCES = ("auto", "local", "hub")

#: The files each benchmark's loaders read, relative to a data root (what ``--source local``
#: needs, and what the tests check before using a data set).
BENCHMARK_FILES: dict[str, tuple[str, ...]] = {
    "gsm8k": ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
    "mbpp": ("mbpp/mbpp.jsonl", "mbpp/sanitized-mbpp.json"),
    "apps": ("apps/apps_train_mapcoder128.jsonl", "apps/apps_train_coderl5.jsonl"),
    "humaneval": ("humaneval/HumanEval.jsonl.gz",),
    "wmt22": tuple(f"translation/wmt22/generaltest2022.{p}.jsonl.gz" for p in
                   ("en-de", "de-en", "en-zh", "zh-en", "en-ru", "ru-en", "en-ja", "ja-en", "de-fr", "fr-de")),
    "hotpotqa": ("multihop/hotpotqa_dev500_corpus.jsonl.gz", "multihop/hotpotqa_dev_distractor_500.jsonl.gz"),
}


class DataNotFoundError(FileNotFoundError, ValueError):
    """A data set that is in none of the local places (and, for ``source="auto"``, could not
    be loaded from the hub either). The message names each place looked and the fix."""


def _cache_root() -> Path:
    env = os.environ.get("LLMRL_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmrl"


def cache_dir() -> Path:
    """Where locally built artefacts (tiny models, warm starts) are cached between runs."""
    path = _cache_root()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_search_path() -> list[tuple[str, Path | None]]:
    """The local data roots in lookup order, each with how it is set (``None``: not set)."""
    env = os.environ.get("LLMRL_DATA_DIR")
    return [("$LLMRL_DATA_DIR", Path(env).expanduser() if env else None),
            ("the shared folder next to the checkout", SHARED_DATA_DIR),
            ("the llmrl cache ($LLMRL_CACHE_DIR/data)", _cache_root() / "data")]


def find_local_data(relative: str | Path) -> Path | None:
    """The first local copy of ``relative`` (e.g. ``"gsm8k/train.jsonl"``), or None."""
    for _, root in data_search_path():
        if root is not None and (root / relative).exists():
            return root / relative
    return None


def missing_data_message(relative: str | Path, *, what: str, hub: str | None = None,
                         hub_error: BaseException | None = None) -> str:
    """Why ``relative`` could not be found: every place looked, then how to fix it."""
    lines = [f"{what}: no local copy of {relative}. Looked in:"]
    for label, root in data_search_path():
        lines.append(f"  - {label}: " + ("not set" if root is None else f"{root / relative} (not there)"))
    if hub is not None and hub_error is not None:
        lines.append(f"  - the Hugging Face hub ({hub}): {type(hub_error).__name__}: {str(hub_error)[:300]}")
    fix = f"Fix: set LLMRL_DATA_DIR to a folder that holds {relative}, or copy it under {_cache_root() / 'data'}"
    lines.append(fix + (f", or go online and use source='hub' (or 'auto') to download {hub}." if hub else "."))
    return "\n".join(lines)


def locate_data(relative: str | Path, *, source: str = "auto", what: str, hub: str | None = None) -> Path | None:
    """The local file to read for ``source``, or None when the hub should be used.

    ``auto``: the first local copy, else None (the hub; a data set with no hub copy raises).
    ``local``: the first local copy, else :class:`DataNotFoundError`. ``hub``: None."""
    if source not in SOURCES:
        raise ValueError(f"{what}: source={source!r}; use one of {SOURCES}")
    if source == "hub":
        if hub is None:
            raise ValueError(f"{what}: there is no hub copy of {relative}; use source='local'")
        return None
    found = find_local_data(relative)
    if found is None and (source == "local" or hub is None):
        raise DataNotFoundError(missing_data_message(relative, what=what, hub=hub))
    return found


def load_hub_dataset(hub: str, *args: Any, relative: str | Path, what: str, source: str = "hub", **kwargs: Any):
    """``datasets.load_dataset(hub, *args, **kwargs)``; a failure (offline, no such dataset)
    raises :class:`DataNotFoundError` naming the local places looked (for ``auto``) and the fix."""
    import datasets

    try:
        return datasets.load_dataset(hub, *args, **kwargs)
    except Exception as e:  # noqa: BLE001 - network / hub errors come in many types
        if source == "auto":
            raise DataNotFoundError(missing_data_message(relative, what=what, hub=hub, hub_error=e)) from e
        raise DataNotFoundError(
            f"{what}: could not load {hub} from the Hugging Face hub ({type(e).__name__}: {str(e)[:300]}). "
            f"Offline? Use a local copy of {relative} (source='local' or 'auto'; set LLMRL_DATA_DIR to the "
            "folder holding it).") from e
