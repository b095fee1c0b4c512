"""Where things live on disk: the shared benchmark data and the cache of locally built models.

Benchmark data is read in place (never copied into the repo): from $LLMRL_DATA_DIR when set,
else from ``../shared/data`` next to the repository checkout."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """Root of the offline benchmark files (mbpp/, apps/, gsm8k/, humaneval/, ...)."""
    env = os.environ.get("LLMRL_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def cache_dir() -> Path:
    """Where locally built artefacts (tiny models, warm starts) are cached between runs."""
    env = os.environ.get("LLMRL_CACHE_DIR")
    path = Path(env) if env else Path.home() / ".cache" / "llmrl"
    path.mkdir(parents=True, exist_ok=True)
    return path
