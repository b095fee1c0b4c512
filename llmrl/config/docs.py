"""Render docs/recipes.md from the schema, so the reference can never drift from the code.

``python -m llmrl.config.docs > docs/recipes.md``; a test checks the file is current."""
from __future__ import annotations

import typing

from pydantic import BaseModel

from llmrl.config.schema import RecipeConfig, aliases

INTRO = """# Recipe reference

A recipe is a YAML file with the sections below; every key is optional (the defaults are shown).
Unknown keys, wrong types and out-of-range values are rejected when the recipe loads, all at once,
naming the key (`llmrl train` exits with code 2). Override any key on the command line with
`--set section.key=value` (repeatable), e.g. `--set trainer.lr=1e-4 --set rollout.num_generations=4`.
Where TRL's `GRPOConfig` names a key differently, its name is accepted too and shown as "TRL:"
(`max_steps`, `beta`, `epsilon`, `epsilon_high`, `num_iterations`); setting both names is an error.

This page is generated from `llmrl/config/schema.py` (`python -m llmrl.config.docs`).
"""


DATA_SOURCES = """
## Data files and hub data sets

`data.name: file` reads local CSV, parquet or JSON / JSON Lines files with `datasets`
(`llmrl.data.registry.file_dataset`); `data.name: hf` reads a Hugging Face hub data set
(`hub_dataset`). Their keys go under `data.args`:

| builder | key | meaning |
|---|---|---|
| `file` | `train_path`, `test_path` | one file per split |
| `file` | `path` | one file for both splits; `test_fraction` (default 0.1) of its rows, a fixed draw, is the test split |
| `file` | `format` | `csv`, `parquet` or `json`; default from the suffix (.csv, .parquet/.pq, .json/.jsonl/.ndjson) |
| `hf` | `path`, `config`, `train_split`, `test_split` | hub name (or folder), configuration, splits for training and evaluation |
| `hf` | `trust_remote_code` | allow the data set's loading script |
| both | `columns` | rename columns to ours, ours: theirs, e.g. `{prompt: question}`; other columns reach the rewards under their own names |

    data:
      name: file
      args: {train_path: data/train.csv, test_path: data/test.csv, columns: {prompt: question}}

A missing, empty or malformed file, or a `columns` entry the data set lacks, stops `llmrl train`
with exit code 2 naming the key and the file.
"""


def _type_name(ann) -> str:
    text = repr(ann) if not isinstance(ann, type) else ann.__name__
    return text.replace("typing.", "").replace("llmrl.config.schema.", "")


def _nested_model(ann) -> type[BaseModel] | None:
    for cand in [ann, *typing.get_args(ann)]:
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _constraints(field) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(m, attr, None) is not None:
                parts.append(f"{sym} {getattr(m, attr)}")
    return ", ".join(parts)


def render_section(model: type[BaseModel], prefix: str, out: list[str]) -> None:
    doc = (model.__doc__ or "").strip()
    out.append(f"\n## `{prefix}`\n")
    if doc and not doc.startswith("A whole recipe"):
        out.append(" ".join(line.strip() for line in doc.splitlines()) + "\n")
    out.append("| key | type | default | allowed | meaning |\n|---|---|---|---|---|")
    nested = []
    for name, field in model.model_fields.items():
        sub = _nested_model(field.annotation)
        if sub is not None and name != "rewards":
            nested.append((f"{prefix}.{name}", sub))
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        shown = "(required)" if field.is_required() else "(section)" if isinstance(default, BaseModel) else repr(default)
        key = f"`{name}`" + "".join(f" (TRL: `{a}`)" for a in aliases(field))
        out.append(f"| {key} | `{_type_name(field.annotation)}` | `{shown}` | {_constraints(field)} | {field.description or ''} |")
    for p, sub in nested:
        render_section(sub, p, out)


def render() -> str:
    out = [INTRO]
    for name, field in RecipeConfig.model_fields.items():
        sub = _nested_model(field.annotation)
        if sub is None:  # a top-level scalar (task): documented in the intro's list below
            out.append(f"\n`{name}`: `{_type_name(field.annotation)}`, default `{field.get_default()!r}`. "
                       f"{field.description or ''}\n")
            continue
        # rewards is a list: its section documents one entry, rewards[]
        render_section(sub, "rewards[]" if name == "rewards" else name, out)
    return "\n".join(out) + "\n" + DATA_SOURCES


if __name__ == "__main__":
    print(render(), end="")
