"""Names a recipe gives for pluggable parts (rewards, data builders, engines): a registered
short name or any ``package.module:attribute``. One resolver, so every key reports an unknown
name, a failed import and a non-callable the same way."""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Iterable, Mapping


def resolve_callable(name: str, registry: Mapping[str, str], *, key: str, what: str,
                     also: Iterable[str] = ()) -> Callable[..., Any]:
    """The callable ``name`` stands for, or ValueError naming ``key`` and what is allowed.

    ``registry`` maps short names to import strings; ``also`` lists names handled elsewhere
    (shown in the error, e.g. built-in engines).

    >>> resolve_callable("json:dumps", {}, key="rewards.name", what="reward")([1])
    '[1]'
    >>> resolve_callable("mth", {"math": "m:f"}, key="rewards.name", what="reward")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: rewards.name: unknown reward 'mth'. Did you mean 'math'? Use one of ['math'] or 'package.module:function'.
    """
    target = registry.get(name, name)
    if ":" not in target:
        known = sorted({*registry, *also})
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"{key}: unknown {what} {name!r}.{hint} Use one of {known} or 'package.module:function'.")
    module, _, attr = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{key}: cannot import {target!r} ({exc}); check the module path and name") from None
    if not callable(fn):
        raise ValueError(f"{key}: {target!r} is not callable")
    return fn
