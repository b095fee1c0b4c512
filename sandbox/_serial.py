"""Strict value serialiser shared by the untrusted child and the trusted parent.

Why strict: a value that crosses from the untrusted process to the verdict must not carry
behaviour. Only *exact* built-in types are accepted (``type(x) is int``, never a subclass), so
an object whose ``__eq__`` always returns True, an ``int`` subclass, or a ``str`` subclass with
a patched ``__eq__`` is rejected before any comparison happens; the parent then compares fresh,
behaviour-free built-ins.

Encoding (JSON): ``None``/bools/ints/strs are themselves; every JSON list is tagged:
``["l", ...]`` list, ``["t", ...]`` tuple, ``["s", ...]`` set, ``["F", ...]`` frozenset,
``["d", [k, v], ...]`` dict, ``["f", x]`` float, ``["c", re, im]`` complex, ``["b", hex]``
bytes. This module must import nothing outside the standard library: it also runs inside the
sandbox, which sees no site-packages.

>>> decode(encode({"a": (1, 2.5, None)}))
{'a': (1, 2.5, None)}
>>> class Eq(int): pass
>>> encode(Eq(3))
Traceback (most recent call last):
...
_serial.Unserialisable: type Eq is not allowed (only exact built-in types cross the sandbox)
"""
from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64
MAX_ITEMS = 2_000_000


# Every frame and channel line of the sandbox goes through these two. They call json's C
# encoder and scanner directly: ``json.dumps`` / ``JSONEncoder.encode`` and ``json.loads`` run
# several Python functions per call (encoding detection, a fresh C encoder and closure each
# time), which cost a fresh forked child ~30 copy-on-write page faults each on first use and
# every process ~3-4 us per call (measured: encode 7.9 -> 4.6 us, parse 8.9 -> 3.8 us).


def _not_json(o: Any) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_c_encoder = getattr(json.encoder, "c_make_encoder", None)
if _c_encoder is not None:
    # No circular-reference markers: everything encoded here is built by this package (plain
    # values from to_plain, frames of str/int/float/lists), never a cycle; the C encoder's
    # recursion guard still stops a runaway structure (RecursionError).
    _encode = _c_encoder(None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",",
                         False, False, True)

    def compact_json(obj: Any) -> str:
        """``json.dumps(obj, separators=(",", ":"))``, ASCII, through the C encoder."""
        return "".join(_encode(obj, 0))
else:  # an interpreter built without _json
    compact_json = json.JSONEncoder(separators=(",", ":")).encode

_scan = json.JSONDecoder().scan_once


def parse_json(data: bytes | bytearray | str) -> Any:
    """Parse one compact JSON document (as :func:`compact_json` writes it: no surrounding
    whitespace) with the C scanner. Raises ValueError for anything else, trailing data
    included (RecursionError for absurd nesting, as ``json.loads``)."""
    s = data if type(data) is str else str(data, "utf-8")
    try:
        obj, end = _scan(s, 0)
    except StopIteration as e:
        raise json.JSONDecodeError("Expecting value", s, e.value) from None
    if end != len(s):
        raise json.JSONDecodeError("Extra data", s, end)
    return obj


class Unserialisable(ValueError):
    """The value is not made only of exact built-in types (or is too deep / too large)."""


Unserialisable.__module__ = "_serial"


def to_plain(x: Any, depth: int = 0, budget: list[int] | None = None, ext: Any = None) -> Any:
    """Convert ``x`` into the tagged JSON-able structure, checking exact types. ``ext`` (the
    judge's proxies only) may encode one more kind of object; it raises for anything else."""
    if budget is None:
        budget = [MAX_ITEMS]
    budget[0] -= 1
    if budget[0] < 0:
        raise Unserialisable("value too large")
    if depth > MAX_DEPTH:
        raise Unserialisable("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x
    if t is float:
        return ["f", x if math.isfinite(x) else repr(x)]
    if t is list or t is tuple or t is set or t is frozenset:
        tag = "l" if t is list else "t" if t is tuple else "s" if t is set else "F"
        out = [tag]
        for item in (x if tag in "lt" else _stable(x)):
            ti = type(item)
            if ti is int or ti is str or item is None or ti is bool:
                # (inline: most values are flat lists of these; same checks as above)
                budget[0] -= 1
                if budget[0] < 0:
                    raise Unserialisable("value too large")
                out.append(item)
            else:
                out.append(to_plain(item, depth + 1, budget, ext))
        return out
    if t is dict or t in _DICT_LIKE:
        # Counter / OrderedDict / defaultdict compare equal to plain dicts; read the storage
        # through dict's own C-level items() so a patched method in the program cannot lie.
        out = ["d"]
        for k, v in dict.items(x):
            out.append([to_plain(k, depth + 1, budget, ext), to_plain(v, depth + 1, budget, ext)])
        return out
    if t is complex:
        return ["c", to_plain(x.real), to_plain(x.imag)]
    if t is bytes:
        return ["b", x.hex()]
    if ext is not None:
        return ext(x)
    raise Unserialisable(
        f"type {t.__name__} is not allowed (only exact built-in types cross the sandbox)")


def _dict_like() -> tuple[type, ...]:
    import collections
    return (collections.Counter, collections.OrderedDict, collections.defaultdict)


_DICT_LIKE = _dict_like()


def _stable(s: Any) -> list[Any]:
    # Sets are unordered; the order is irrelevant after decoding (set equality), so iterate as is.
    return list(s)


def from_plain(p: Any, depth: int = 0, ext: Any = None) -> Any:
    """Inverse of :func:`to_plain`; rejects anything malformed with :class:`Unserialisable`.
    ``ext`` decodes the ``["r", ref]`` tag (used only inside the sandbox, for proxies)."""
    if depth > MAX_DEPTH + 2:
        raise Unserialisable("value nested too deeply")
    t = type(p)
    if p is None or t is bool or t is int or t is str:
        return p
    if t is not list or not p or type(p[0]) is not str:
        raise Unserialisable(f"malformed encoded value of type {t.__name__}")
    tag = p[0]
    if tag == "l" or tag == "t":
        # scalars inline (no call per item): the common flat list of ints or strings
        items = [v if type(v) is int or type(v) is str or v is None or type(v) is bool
                 else from_plain(v, depth + 1, ext) for v in p[1:]]
        return items if tag == "l" else tuple(items)
    if tag in ("s", "F"):
        items = [from_plain(v, depth + 1, ext) for v in p[1:]]
        try:
            return set(items) if tag == "s" else frozenset(items)
        except TypeError as e:
            raise Unserialisable(f"unhashable set item: {e}") from None
    if tag == "d":
        out = {}
        for kv in p[1:]:
            if type(kv) is not list or len(kv) != 2:
                raise Unserialisable("malformed dict item")
            k = from_plain(kv[0], depth + 1, ext)
            try:
                out[k] = from_plain(kv[1], depth + 1, ext)
            except TypeError as e:
                raise Unserialisable(f"unhashable dict key: {e}") from None
        return out
    if tag == "f" and len(p) == 2:
        v = p[1]
        if type(v) is float:
            return v
        if type(v) is int:
            return float(v)
        if v in ("nan", "inf", "-inf"):
            return float(v)
        raise Unserialisable("malformed float")
    if tag == "c" and len(p) == 3:
        re_, im = from_plain(p[1], depth + 1, ext), from_plain(p[2], depth + 1, ext)
        if type(re_) is not float or type(im) is not float:
            raise Unserialisable("malformed complex")
        return complex(re_, im)
    if tag == "b" and len(p) == 2 and type(p[1]) is str:
        try:
            return bytes.fromhex(p[1])
        except ValueError:
            raise Unserialisable("malformed bytes") from None
    if tag == "r" and ext is not None and len(p) == 2:
        return ext(p[1])
    raise Unserialisable(f"unknown tag {tag!r}")


def encode(x: Any) -> str:
    """Serialise ``x`` (exact built-in types only) to a JSON string."""
    try:
        return json.dumps(to_plain(x), separators=(",", ":"), allow_nan=False)
    except (ValueError, RecursionError, OverflowError) as e:  # e.g. int too large for str()
        if isinstance(e, Unserialisable):
            raise
        raise Unserialisable(f"cannot serialise: {e}") from None


def decode(s: str) -> Any:
    """Parse a string made by :func:`encode` back into fresh built-in values."""
    try:
        return from_plain(json.loads(s))
    except (ValueError, RecursionError) as e:
        if isinstance(e, Unserialisable):
            raise
        raise Unserialisable(f"cannot decode: {e}") from None
