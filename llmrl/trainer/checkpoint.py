"""Checkpoints that resume exactly and load safely.

A checkpoint is a folder ``checkpoints/step_NNNNNNN/`` with
  trainable.safetensors  the trainable parameters only (LoRA: the adapters, not the frozen base)
  critic.safetensors     the critic's trainable parameters, when the run trains one (PPO / gae)
  state.pt               optimizer, scheduler, data cursor, counters, every RNG and the recipe,
                         plain tensors/containers only, so it loads with ``weights_only=True``
                         (no arbitrary object is ever unpickled from a checkpoint)

Written to a temporary folder and renamed, so a kill -9 mid-write leaves the previous
checkpoint intact and never a half-written one under a valid name. ``load_latest`` falls back
past a checkpoint that cannot be read, saying so."""
from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger("llmrl")

_NAME = re.compile(r"^step_(\d+)$")
WEIGHTS, STATE, CRITIC = "trainable.safetensors", "state.pt", "critic.safetensors"


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions); earlier ones are intact."""


def rng_state() -> dict[str, Any]:
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters a checkpoint of ``model`` holds: the trainable ones, except the adapter of a
    critic sharing the policy's base (``critic.share_base``), which is the critic's and lives in
    ``critic.safetensors``."""
    from llmrl.trainer.critic import CRITIC_ADAPTER

    foreign = CRITIC_ADAPTER in getattr(model, "peft_config", {})
    return {n: p for n, p in model.named_parameters()
            if p.requires_grad and not (foreign and CRITIC_ADAPTER in n.split("."))}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in trainable_parameters(model).items()}


def load_trainable(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Load saved trainable parameters; every trainable parameter must be in the file, and
    nothing else (a checkpoint of another model or LoRA layout is refused, not half-loaded)."""
    expected = set(trainable_parameters(model))
    missing, extra = expected - weights.keys(), weights.keys() - expected
    if missing or extra:
        raise ValueError(f"the checkpoint does not fit this model: {len(missing)} trainable parameters missing "
                         f"(e.g. {sorted(missing)[:2]}), {len(extra)} unknown (e.g. {sorted(extra)[:2]})")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def save_checkpoint(output_dir: str | Path, step: int, model: torch.nn.Module, state: dict[str, Any], *,
                    keep: int = 2, critic: torch.nn.Module | None = None) -> Path:
    """Atomically write ``checkpoints/step_{step}/`` and prune all but the newest ``keep``."""
    folder = checkpoint_dir(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"step_{step:07d}"
    tmp = folder / f".step_{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        torch.save({**state, "step": step, "rng": rng_state()}, tmp / STATE)
        files = [WEIGHTS, STATE]
        if critic is not None:
            save_file(trainable_state(critic), str(tmp / CRITIC))
            files.append(CRITIC)
        for f in files:
            with open(tmp / f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as exc:  # disk full, quota, permissions (torch.save wraps some as RuntimeError)
        shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(output_dir)
        raise CheckpointWriteError(
            f"could not write the checkpoint of step {step} to {folder} ({type(exc).__name__}: {exc}). "
            f"Nothing was replaced: the newest checkpoint is {previous[-1] if previous else 'none'}. "
            "Free space (or fix permissions) and continue with --resume.") from exc
    if final.exists():  # re-saving a step (e.g. the final one after a resume at that step)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    folder = checkpoint_dir(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(trainable weights, state) of one checkpoint folder, loaded without unpickling objects;
    a critic's weights, when the folder has them, are ``state["critic_weights"]``."""
    state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    if (path / CRITIC).exists():
        state["critic_weights"] = load_file(str(path / CRITIC))
    return load_file(str(path / WEIGHTS)), state


def load_latest(output_dir: str | Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, Any]] | None:
    """The newest readable checkpoint; an unreadable one (truncated, corrupt) is skipped with a warning."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            weights, state = read_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file means: try the previous one
            log.warning("checkpoint %s cannot be read (%s: %s); trying the previous one", path, type(exc).__name__, exc)
            continue
        return path, weights, state
    return None
