"""Load a recipe YAML, apply ``--set key.sub=value`` overrides, validate once.

Every problem is collected and reported together, each naming the key, the bad value and what
is allowed, with a "did you mean" for typos, so a user fixes a recipe in one round trip."""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmrl.config.schema import RecipeConfig, aliases


class RecipeError(ValueError):
    """A recipe that cannot be used; the message lists every problem found."""


_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?|[-+]?\.inf|\.nan", re.IGNORECASE)


def parse_value(raw: str) -> Any:
    """An override's value: numbers, true/false and null are read as such, ``[...]``/``{...}``
    as YAML flow collections, everything else is kept verbatim as a string (so ``a: b``, a date
    or ``x # y`` is not turned into a mapping, a date or a truncated string).

    >>> parse_value("1e-4"), parse_value("4"), parse_value("true"), parse_value("null"), parse_value("none")
    (0.0001, 4, True, None, 'none')
    >>> parse_value("a: b"), parse_value("2024-01-01"), parse_value("x # y"), parse_value("[1, 2]")
    ('a: b', '2024-01-01', 'x # y', [1, 2])
    """
    s = raw.strip()
    if _INT.fullmatch(s):
        return int(s)
    if _FLOAT.fullmatch(s):
        return float(s.replace(".inf", "inf").replace(".INF", "inf").replace(".nan", "nan").replace(".NAN", "nan"))
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    if s.lower() in ("null", "~"):  # not "none": it is a value of several keys (token_weighting.type: none)
        return None
    if s[:1] in "[{" and "#" not in s:
        try:
            value = yaml.safe_load(s)
        except yaml.YAMLError as exc:
            raise RecipeError(f"value {raw!r} starts like a YAML list/mapping but does not parse: {exc}") from None
        return _dates_as_text(value)
    return raw


def _dates_as_text(value: Any) -> Any:
    import datetime

    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return [_dates_as_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _dates_as_text(v) for k, v in value.items()}
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``'trainer.lr=1e-4'`` into (['trainer', 'lr'], 0.0001); see :func:`parse_value`.
    A numeric part indexes a list (``rewards.0.weight=2``).

    >>> parse_override("rollout.num_generations=4")
    (['rollout', 'num_generations'], 4)
    """
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. --set trainer.lr=1e-4")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise RecipeError(f"--set {text!r}: empty key")
    try:
        return path, parse_value(raw)
    except RecipeError as exc:
        raise RecipeError(f"--set {text!r}: {exc}") from None


def apply_overrides(raw: Any, overrides: list[str], *, source: str = "recipe") -> dict[str, Any]:
    """Apply ``--set`` overrides in order; a numeric key part indexes a list.

    >>> apply_overrides({"rewards": [{"name": "a", "weight": 1}]}, ["rewards.0.weight=2"])
    {'rewards': [{'name': 'a', 'weight': 2}]}
    """
    if overrides and not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping of sections (trainer:, model:, ...), "
                          f"got a {type(raw).__name__}; --set cannot be applied to it")
    for text in overrides:
        path, value = parse_override(text)
        node: Any = raw
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            where = ".".join(path[:depth]) or "(recipe)"
            if isinstance(node, list):
                if not _INT.fullmatch(part):
                    raise RecipeError(f"--set {text!r}: '{where}' is a list; index it with a number, "
                                      f"e.g. {where}.0.{part}")
                i = int(part)
                if not -len(node) <= i < len(node):
                    raise RecipeError(f"--set {text!r}: '{where}' has {len(node)} entries, no index {i}")
                if last:
                    node[i] = value
                else:
                    node = node[i]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    child = node.get(part)
                    if child is None:
                        child = node[part] = {}
                    node = child
            else:
                raise RecipeError(f"--set {text!r}: '{where}' is a value ({node!r}), not a section or list")
    return raw


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The schema section a validation-error location points into (for suggestions)."""
    model: Any = RecipeConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        for cand in candidates:
            inner = getattr(cand, "__args__", None)
            for c in [cand, *(inner or ())]:
                if isinstance(c, type) and issubclass(c, BaseModel):
                    model = c
                    break
            else:
                continue
            break
        else:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(recipe)"
    if err["type"] == "extra_forbidden":
        section = _model_at(loc)
        allowed = sorted(section.model_fields) if section else []
        trl = [a for f in section.model_fields.values() for a in aliases(f)] if section else []
        close = difflib.get_close_matches(str(loc[-1]), allowed + trl, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"{key}: unknown key.{hint} Allowed here: {', '.join(allowed)}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and not loc:
        return msg  # the schema's cross-field rules, already one per line
    bad = err.get("input")
    shown = "" if isinstance(bad, dict) else f" (got {bad!r})"
    return f"{key}: {msg}{shown}"


def validate_recipe(raw: dict[str, Any], *, source: str = "recipe") -> RecipeConfig:
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping of sections, got {type(raw).__name__}")
    try:
        cfg = RecipeConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [line for e in exc.errors() for line in _format_error(e).split("\n  - ")]
        raise RecipeError(f"{source}: {len(lines)} problem(s):\n  - " + "\n  - ".join(lines)) from None
    from llmrl.config.validate import recipe_problems

    lines = recipe_problems(cfg)  # names and args that must resolve, checked before any model loads
    if lines:
        raise RecipeError(f"{source}: {len(lines)} problem(s):\n  - " + "\n  - ".join(lines))
    return cfg


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    """Read, override and validate a recipe; raises RecipeError with every problem listed."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path} (check the path; shipped recipes live in recipes/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    raw = apply_overrides(raw, overrides or [], source=str(path))
    return validate_recipe(raw, source=str(path))


def dump_recipe(cfg: RecipeConfig) -> str:
    """The fully resolved recipe (defaults filled in), saved next to every run."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
