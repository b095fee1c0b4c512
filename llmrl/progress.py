"""Progress bars that are useful on a terminal and harmless in a log file.

On a terminal :func:`progress` is a normal tqdm bar. When the bar's stream is not a terminal
(``llmrl train ... > run.log 2>&1``, a batch job, CI), tqdm would append a carriage-return
refresh ten times a second; here it writes a plain line at most every ``log_every_s`` seconds
(default 60, ``$LLMRL_PROGRESS_EVERY_S``) instead. ``$LLMRL_PROGRESS=0`` turns every bar off,
``=1`` forces terminal behaviour.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> for _ in progress(range(1000), desc="demo", file=out):
    ...     pass
    >>> out.getvalue().count("\\r") <= 2   # no flood of refreshes in a non-terminal stream
    True
"""
from __future__ import annotations

import os
import sys
from typing import Any, Iterable

__all__ = ["progress", "is_terminal"]


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, StringIO)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str | None = None,
             enabled: bool = True, file: Any = None, log_every_s: float | None = None, **kwargs: Any):
    """A ``tqdm`` bar over ``iterable`` (or with ``total`` for manual ``update``), throttled when
    its stream is not a terminal.

    Args:
        iterable, total, desc: as for tqdm.
        enabled: False gives a disabled bar (same API, prints nothing), e.g. ``--no-progress``.
        file: stream to write to (default stderr, as tqdm).
        log_every_s: seconds between lines when not on a terminal (default 60).
        **kwargs: passed to tqdm (``unit``, ``initial``, ``leave``, ...).
    """
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    env = os.environ.get("LLMRL_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        enabled = False
    terminal = env in ("1", "true", "yes", "on") or is_terminal(stream)
    if not terminal:
        every = log_every_s if log_every_s is not None else float(os.environ.get("LLMRL_PROGRESS_EVERY_S", 60))
        # one refresh per interval at most; fixed width and ASCII so the log stays readable
        kwargs.update(mininterval=every, maxinterval=max(every, 10.0), miniters=1, ascii=True, ncols=100,
                      dynamic_ncols=False)
        kwargs.setdefault("leave", True)
    else:
        kwargs.setdefault("dynamic_ncols", True)
    from tqdm.std import tqdm as std_tqdm

    cls = tqdm if terminal else std_tqdm  # tqdm.auto may pick the notebook bar, which ignores files
    return cls(iterable, total=total, desc=desc, disable=not enabled, file=stream, **kwargs)
