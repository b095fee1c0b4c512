"""Load a recipe YAML, apply ``--set key.sub=value`` overrides, validate once.

Every problem is collected and reported together, each naming the key, the bad value and what
is allowed, with a "did you mean" for typos, so a user fixes a recipe in one round trip."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmrl.config.schema import RecipeConfig


class RecipeError(ValueError):
    """A recipe that cannot be used; the message lists every problem found."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``'trainer.lr=1e-4'`` into (['trainer', 'lr'], 0.0001); the value is read as YAML.

    >>> parse_override("rollout.num_generations=4")
    (['rollout', 'num_generations'], 4)
    """
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. --set trainer.lr=1e-4")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise RecipeError(f"--set {text!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    # YAML 1.1 reads "1e-4" as a string; users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"--set {text!r}: '{part}' is not a section")
            node = child
        node[path[-1]] = value
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
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return f"{key}: unknown key.{hint} Allowed here: {', '.join(allowed)}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "value_error" and not loc:
        return msg.replace("; ", "\n  - ")
    bad = err.get("input")
    shown = "" if isinstance(bad, dict) else f" (got {bad!r})"
    return f"{key}: {msg}{shown}"


def validate_recipe(raw: dict[str, Any], *, source: str = "recipe") -> RecipeConfig:
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping of sections, got {type(raw).__name__}")
    try:
        return RecipeConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise RecipeError(f"{source}: {len(lines)} problem(s):\n  - " + "\n  - ".join(lines)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    """Read, override and validate a recipe; raises RecipeError with every problem listed."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path} (check the path; shipped recipes live in recipes/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: not valid YAML: {exc}") from None
    raw = apply_overrides(raw, overrides or [])
    return validate_recipe(raw, source=str(path))


def dump_recipe(cfg: RecipeConfig) -> str:
    """The fully resolved recipe (defaults filled in), saved next to every run."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
