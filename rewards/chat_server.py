"""A small OpenAI-compatible chat-completions server around a local transformers model.

For a judge on a machine without vLLM (CPU, tests, a quick look): ``POST /v1/chat/completions``
and ``GET /v1/models`` with the request and response shapes of the OpenAI API that
:class:`llmrl.rewards.chat_client.ChatClient` (and any other OpenAI client) speaks. Greedy
unless the request sets ``temperature > 0``. One generation at a time (a lock): it is a
stand-in for ``vllm serve``, not a replacement. It binds 127.0.0.1 unless told otherwise.

    >>> app = make_app(lambda messages, params: "equal", model_name="echo")
    >>> sorted({r.resource.canonical for r in app.router.routes()})
    ['/v1/chat/completions', '/v1/models']
"""
from __future__ import annotations

import asyncio
import threading
import time
import uuid
from typing import Any, Callable

Reply = Callable[[list[dict[str, str]], dict[str, Any]], str]


def make_app(reply: Reply, *, model_name: str):
    """An aiohttp application answering chat completions with ``reply(messages, params)``
    (run in a worker thread, one at a time)."""
    from aiohttp import web

    lock = threading.Lock()

    def locked(messages, params):
        with lock:
            return reply(messages, params)

    async def chat(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            messages = body["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) and "content" in m for m in messages):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": {"message": "body must be JSON with a 'messages' list of "
                                                           "{role, content}", "type": "invalid_request_error"}},
                                     status=400)
        params = {k: v for k, v in body.items() if k not in ("messages", "model")}
        text = await asyncio.to_thread(locked, messages, params)
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", model_name),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        })

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": model_name, "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    return app


def hf_reply(model: str, *, device: str = "cpu") -> Reply:
    """``reply`` backed by a causal LM (folder or hub name), with its chat template when it has
    one. ``max_tokens`` and ``temperature`` from the request are honoured."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    net = AutoModelForCausalLM.from_pretrained(model).to(device).eval()

    def reply(messages: list[dict[str, str]], params: dict[str, Any]) -> str:
        if getattr(tok, "chat_template", None):
            ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)["input_ids"]
        else:
            ids = tok("\n".join(str(m["content"]) for m in messages), return_tensors="pt")["input_ids"]
        temperature = float(params.get("temperature") or 0.0)
        with torch.no_grad():
            out = net.generate(ids.to(device), max_new_tokens=int(params.get("max_tokens") or 64),
                               do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    return reply


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    """Serve ``model`` until interrupted (``python -m llmrl.rewards.chat_server MODEL [PORT]``)."""
    from aiohttp import web

    web.run_app(make_app(hf_reply(model, device=device), model_name=model), host=host, port=port)


if __name__ == "__main__":  # pragma: no cover - a manual entry point
    import sys

    serve(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 8000)
