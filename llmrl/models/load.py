"""Load a policy: any Hugging Face causal LM (hub name or local folder) or a tiny local model.

``tiny://NAME`` (NAME one of ``llmrl.models.tiny.TINY_MODELS``: arithmetic, code; anything else
is an error) builds ``llmrl.models.tiny.build_tiny_model`` into ``cache_dir()/tiny/NAME``
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


def check_tiny_name(name_or_path: str) -> tuple[str, dict]:
    """Name and build options of ``tiny://NAME[?options]``, or ModelLoadError naming the known
    models. Cheap (nothing is built), so recipe validation calls it before anything loads."""
    from llmrl.models.tiny import TINY_MODELS

    spec = name_or_path[len(TINY_SCHEME):]
    name, _, query = spec.partition("?")
    if name not in TINY_MODELS:
        import difflib

        close = difflib.get_close_matches(name, list(TINY_MODELS), n=1)
        hint = f" Did you mean 'tiny://{close[0]}'?" if close else ""
        known = ", ".join(f"tiny://{k} ({v})" for k, v in TINY_MODELS.items())
        raise ModelLoadError(f"{name_or_path!r}: there is no tiny model {name!r}.{hint} Known tiny models: {known}. "
                             "Build options go in the query string, e.g. 'tiny://arithmetic?hidden_size=256'.")
    return name, _tiny_build_kwargs(query)


def resolve_tiny(name_or_path: str) -> Path:
    """Folder of the tiny model ``tiny://NAME[?options]``, building it first if it is missing.

    The build goes to a temporary folder that is renamed into place, so concurrent processes
    (e.g. one per GPU) never see a half-written model.
    """
    from llmrl.models.tiny import build_tiny_model

    name, kwargs = check_tiny_name(name_or_path)
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


def check_dtype_device(dtype: str, device: str) -> None:
    """Refuse dtypes that cannot train on ``device`` before any work is done.

    float16 on CPU: most CPU kernels are slow or missing in half precision and, without a
    loss scaler, gradients underflow, so training fails a few steps in with a misleading
    "lower the lr" message. bfloat16 (same memory, float32's range) or float32 work.

    >>> check_dtype_device("bfloat16", "cpu")
    >>> check_dtype_device("float16", "cpu")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    llmrl.models.load.ModelLoadError: model.dtype: float16 is not supported on the CPU ...
    """
    if _DTYPES.get(dtype) == "float16" and str(device).split(":")[0] == "cpu":
        raise ModelLoadError("model.dtype: float16 is not supported on the CPU (no loss scaling; half-precision CPU "
                             "kernels are slow or missing, and training breaks down within a few steps). "
                             "Fix: use model.dtype: bfloat16 or float32, or train on a GPU (trainer.device: cuda).")


def base_model_reference(name_or_path: str) -> str:
    """What an adapter's ``base_model_name_or_path`` should say for a model loaded from
    ``name_or_path``: the name the user gave (``tiny://arithmetic``, a hub name, their folder),
    never the cache folder a tiny model happens to be built in on this machine.

    >>> base_model_reference("tiny://arithmetic"), base_model_reference("Qwen/Qwen2.5-0.5B")
    ('tiny://arithmetic', 'Qwen/Qwen2.5-0.5B')
    """
    s = str(name_or_path)
    if s.startswith(TINY_SCHEME):
        return s
    tiny_root = (cache_dir() / "tiny").resolve()
    p = Path(s).expanduser()
    if p.exists() and tiny_root in p.resolve().parents:  # a resolved tiny folder: name it again
        folder = p.resolve().relative_to(tiny_root).parts[0]
        name, *opts = folder.split("__")
        query = "&".join(o.replace("-", "=", 1) for o in opts)
        return f"{TINY_SCHEME}{name}" + (f"?{query}" if query else "")
    return s


def set_adapter_base(model, name_or_path: str) -> None:
    """Point a peft model's saved ``adapter_config.json`` at :func:`base_model_reference`
    (call before ``save_pretrained``; :func:`load_model_and_tokenizer` already does)."""
    for config in getattr(model, "peft_config", {}).values():
        config.base_model_name_or_path = base_model_reference(name_or_path)


BASE_MODEL_DIR = "base_model"


def save_final(model, tokenizer, final_dir: str | Path) -> Path:
    """Save the trained policy (full model or LoRA adapter) and tokenizer to ``final_dir``.

    A LoRA adapter's ``adapter_config.json`` names its base as the user gave it (see
    :func:`base_model_reference`). When the base only exists in this machine's cache (a
    warm-started model), the base is copied to ``final_dir/base_model`` and the adapter points
    there, so the run folder is self-contained and never refers into the cache."""
    import json

    final_dir = Path(final_dir)
    if hasattr(model, "peft_config"):   # the policy's adapter only (a shared-base critic's is not the policy)
        model.save_pretrained(final_dir, selected_adapters=[model.active_adapter])
    else:
        model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    cfg_path = final_dir / "adapter_config.json"
    if not cfg_path.is_file():
        return final_dir
    cfg = json.loads(cfg_path.read_text())
    base = str(cfg.get("base_model_name_or_path") or "")
    local = Path(base).expanduser()
    if base and not base.startswith(TINY_SCHEME) and local.is_dir() and _in_cache(local):
        target = final_dir / BASE_MODEL_DIR
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(local, target)
        cfg["base_model_name_or_path"] = str(target.resolve())
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return final_dir


def _in_cache(path: Path) -> bool:
    root = cache_dir().resolve()
    return root in path.resolve().parents


def _adapter_base(folder: str) -> str | None:
    """``base_model_name_or_path`` of a saved LoRA adapter folder, or None if it is not one;
    a run folder's own ``base_model/`` copy is used when the recorded path has moved."""
    import json

    cfg = Path(folder) / "adapter_config.json"
    if not cfg.is_file():
        return None
    try:
        base = json.loads(cfg.read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelLoadError(f"{cfg}: not a readable adapter config ({e}); re-save the adapter") from None
    own = Path(folder) / BASE_MODEL_DIR
    if not str(base).startswith(TINY_SCHEME) and not Path(str(base)).exists() and (own / "config.json").is_file():
        return str(own)
    return base


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


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass (``model.gradient_checkpointing``).

    Non-reentrant checkpointing (``use_reentrant=False``, PyTorch's recommended mode): it works
    when the layer inputs do not require grad. With LoRA the frozen embeddings' output does not, so
    ``enable_input_require_grads`` makes it, as peft's own ``prepare_model_for_kbit_training`` does.
    Checkpointing is only active in train mode; generation (eval mode) keeps its KV cache."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ModelLoadError(f"model.gradient_checkpointing: {type(base).__name__} does not support gradient "
                             "checkpointing; set model.gradient_checkpointing: false")
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name; the old one warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if base is not model:  # peft: only adapters train, the embeddings are frozen
        base.enable_input_require_grads()


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
    gradient_checkpointing: bool = False,
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
        gradient_checkpointing: recompute activations in the backward pass
            (:func:`enable_gradient_checkpointing`).

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token (falls back to eos) and
        ``padding_side="left"``; ``model.generation_config.pad_token_id`` is set.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise ModelLoadError(f"dtype={dtype!r} is not supported; use one of {sorted(set(_DTYPES))}.")
    torch_dtype = _DTYPES[dtype] if dtype == "auto" else getattr(torch, _DTYPES[dtype])

    device = device or _default_device()
    check_dtype_device(dtype, device)
    source = str(name_or_path)
    if source.startswith(TINY_SCHEME):
        source = str(resolve_tiny(source))
    elif source.startswith(("/", ".", "~")) and not Path(source).expanduser().exists():
        raise ModelLoadError(
            f"model path {source!r} does not exist. Fix: check the path, or pass a Hugging Face "
            "Hub name, or 'tiny://arithmetic' for the built-in tiny model.")
    else:
        source = str(Path(source).expanduser()) if source.startswith("~") else source

    adapter_dir, base = None, _adapter_base(source) if Path(source).is_dir() else None
    if base is not None:  # a saved LoRA adapter (e.g. runs/X/final): load its base, then the adapter
        adapter_dir = source
        source = str(resolve_tiny(base)) if base.startswith(TINY_SCHEME) else base
    tok_source = adapter_dir if adapter_dir and (Path(adapter_dir) / "tokenizer_config.json").is_file() else source
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise _load_error("tokenizer", tok_source, e) from e
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

    model.to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=lora_r is not None)
        set_adapter_base(model, base)
        if gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model, tokenizer
    if lora_r is not None:
        if lora_r <= 0:
            raise ModelLoadError(f"lora_r={lora_r} must be a positive rank (or None for full fine-tuning).")
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            target_modules=lora_target_modules or "all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        set_adapter_base(model, str(name_or_path))  # final/adapter_config.json names tiny://..., not a cache path
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, tokenizer
