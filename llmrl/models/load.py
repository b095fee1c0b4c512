"""Load a policy: any Hugging Face causal LM (hub name or local folder) or a tiny local model.

``tiny://NAME`` builds ``llmrl.models.tiny.build_tiny_model`` into ``cache_dir()/tiny/NAME``
on first use (deterministic: same name, same weights) and loads it from there. Build options
go in a query string, e.g. ``tiny://arithmetic?seed=1&hidden_size=256`` (each distinct
query gets its own cache folder).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl

from llmrl.paths import cache_dir

TINY_SCHEME = "tiny://"
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "auto": "auto"}


class ModelLoadError(ValueError):
    """A model or tokenizer could not be loaded; the message says why and how to fix it."""


def _tiny_build_kwargs(query: str) -> dict:
    from llmrl.models import tiny
    import inspect

    allowed = {p.name: p.default for p in inspect.signature(tiny.build_tiny_model).parameters.values()
               if p.kind is p.KEYWORD_ONLY}
    kwargs = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise ModelLoadError(f"tiny model option {key!r} is unknown; use one of {sorted(allowed)}.")
        default = allowed[key]
        if isinstance(default, bool):
            kwargs[key] = value.lower() in ("1", "true", "yes")
        else:
            try:
                kwargs[key] = int(value)
            except ValueError:
                raise ModelLoadError(f"tiny model option {key}={value!r} must be an integer.") from None
    return kwargs


def resolve_tiny(name_or_path: str) -> Path:
    """Folder of the tiny model ``tiny://NAME[?options]``, building it first if it is missing.

    The build goes to a temporary folder that is renamed into place, so concurrent processes
    (e.g. one per GPU) never see a half-written model.
    """
    from llmrl.models.tiny import build_tiny_model

    spec = name_or_path[len(TINY_SCHEME):]
    name, _, query = spec.partition("?")
    if not name or "/" in name or name.startswith("."):
        raise ModelLoadError(f"{name_or_path!r}: a tiny model name must be one plain word, e.g. "
                             "'tiny://arithmetic'.")
    kwargs = _tiny_build_kwargs(query)
    folder = name + "".join(f"__{k}-{v}" for k, v in sorted(kwargs.items()))
    target = cache_dir() / "tiny" / folder
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=target.parent))
    try:
        build_tiny_model(tmp, **kwargs)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; its copy is identical
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _default_device() -> str:
    import torch

    if torch.cuda.is_available():
        # current_device() honours torch.cuda.set_device (accelerate sets it per process).
        return f"cuda:{torch.cuda.current_device()}"
    return "cpu"


def _load_error(what: str, source: str, e: Exception) -> ModelLoadError:
    looks_local = source.startswith((".", "/", "~")) or os.sep in source and source.count("/") != 1
    if looks_local:
        why = f"the folder {source!r} does not exist or holds no {what} files"
        fix = "check the path (save_pretrained output), or use a hub name or 'tiny://arithmetic'"
    else:
        why = (f"{source!r} is not a local folder and could not be fetched from the Hugging Face "
               f"Hub (offline, unknown name, or gated)")
        fix = ("pass a local folder, pre-download it (huggingface-cli download) and set "
               "HF_HUB_OFFLINE=1, check the name, or use 'tiny://arithmetic' for a local model")
    return ModelLoadError(f"could not load the {what} for {source!r}: {why}. Fix: {fix}. "
                          f"(underlying error: {type(e).__name__}: {e})")


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    dtype: str = "float32",
    lora_r: int | None = None,
    lora_alpha: int = 16,
    lora_dropout: float = 0.0,
    lora_target_modules: list[str] | str | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
):
    """Load a causal LM and its tokenizer, ready for batched generation and training.

    Args:
        name_or_path: hub name (``"Qwen/Qwen2.5-0.5B-Instruct"``), local folder, or
            ``tiny://NAME[?options]`` (built locally on first use, see module docstring).
        dtype: ``float32`` | ``bfloat16`` | ``float16`` | ``auto`` (aliases fp32/bf16/fp16).
        lora_r: LoRA rank; None trains the full model. With LoRA the base weights are frozen
            and only the adapters require grad.
        lora_alpha, lora_dropout: LoRA scaling and dropout.
        lora_target_modules: module names for the adapters; default ``"all-linear"``.
        device: ``"cpu"``, ``"cuda:0"``...; default the current CUDA device when there is one,
            else CPU. The model is moved there before LoRA is attached.
        trust_remote_code: passed to ``from_pretrained`` (needed by some hub models).
        attn_implementation: e.g. ``"sdpa"``, ``"eager"``; default: transformers' choice.

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token (falls back to eos) and
        ``padding_side="left"``; ``model.generation_config.pad_token_id`` is set.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype={dtype!r} is not supported; use one of {sorted(set(_DTYPES))}.")
    torch_dtype = _DTYPES[dtype] if dtype == "auto" else getattr(torch, _DTYPES[dtype])

    source = str(name_or_path)
    if source.startswith(TINY_SCHEME):
        source = str(resolve_tiny(source))
    elif source.startswith(("/", ".", "~")) and not Path(source).expanduser().exists():
        raise ModelLoadError(
            f"model path {source!r} does not exist. Fix: check the path, or pass a Hugging Face "
            "Hub name, or 'tiny://arithmetic' for the built-in tiny model.")
    else:
        source = str(Path(source).expanduser()) if source.startswith("~") else source

    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("tokenizer", source, e) from e
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError) as e:
        raise _load_error("model", source, e) from e

    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"the tokenizer of {source!r} has neither a pad nor an eos token; "
                                 "set tokenizer.pad_token before batching.")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    model.to(device or _default_device())
    if lora_r is not None:
        if lora_r <= 0:
            raise ModelLoadError(f"lora_r={lora_r} must be a positive rank (or None for full fine-tuning).")
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=lora_target_modules or "all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    return model, tokenizer
