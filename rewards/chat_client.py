"""An OpenAI-compatible chat-completions client for judges: vLLM's server, SGLang, a hosted API.

Why our own ~150 lines instead of the ``openai`` package: a judge inside an RL step needs
exactly four things the SDK does not give together (a concurrency cap shared by every call of
the process, retries that honour ``Retry-After`` on 429/5xx, a response cache on disk keyed by
the whole request, and an aiohttp session that lives on the reward runner's persistent event
loop), and aiohttp is already a core dependency.

- ``base_url``: the server's ``.../v1`` (``$LLMRL_JUDGE_BASE_URL`` when not given);
  ``model``: the served model name (``$LLMRL_JUDGE_MODEL``); the key is read from the
  environment variable ``api_key_env`` (default ``OPENAI_API_KEY``; unset: no auth header,
  as a local vLLM server wants).
- Retries: 429, 5xx, connection errors and timeouts, up to ``retries`` more tries with
  exponential backoff (``backoff_s * 2**k``, capped at ``max_backoff_s``, or the server's
  ``Retry-After`` when it sends one). Other 4xx fail at once (a wrong model name will not fix
  itself).
- Cache: ``cache_dir/<sha256 of the request>.json``; the request is the URL, model, messages
  and every sampling parameter, so a changed prompt template or temperature never hits an old
  answer. Written atomically (a crash leaves no half file).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class ChatError(RuntimeError):
    """A request that failed for good (after retries, or a non-retryable status)."""


class ChatClient:
    """``await client.complete(messages, **params) -> str`` (the first choice's content).

    One instance per (server, model, settings); sessions and the concurrency semaphore are made
    per event loop on first use, so an instance works from the reward runner's loop and from
    ``asyncio.run`` in a script alike. ``stats`` counts requests, cache hits and retries.
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, *, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout_s: float = 60.0, retries: int = 4, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, cache_dir: str | os.PathLike | None = None):
        base_url = base_url or os.environ.get("LLMRL_JUDGE_BASE_URL")
        model = model or os.environ.get("LLMRL_JUDGE_MODEL")
        if not base_url:
            raise ValueError("judge base_url: not set; give backend_args.base_url (e.g. http://localhost:8000/v1 "
                             "for `vllm serve`) or set LLMRL_JUDGE_BASE_URL")
        if not model:
            raise ValueError("judge model: not set; give backend_args.model (the served model name) or set "
                             "LLMRL_JUDGE_MODEL")
        if max_concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError(f"judge client: need max_concurrency >= 1, retries >= 0, timeout_s > 0; got "
                             f"{max_concurrency}, {retries}, {timeout_s}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency, self.timeout_s = max_concurrency, timeout_s
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "failures": 0}
        # id(loop) -> (session, semaphore, loop); holding the loop keeps its id from being reused
        self._per_loop: dict[int, tuple[Any, asyncio.Semaphore, asyncio.AbstractEventLoop]] = {}

    # ------------------------------------------------------------------ cache
    def request_key(self, body: dict[str, Any]) -> str:
        """sha256 of the URL and the full request body (model, messages, sampling parameters)."""
        blob = json.dumps({"url": self.url, **body}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _cache_get(self, key: str) -> str | None:
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))["content"]
        except (OSError, ValueError, KeyError):
            return None

    def _cache_put(self, key: str, body: dict[str, Any], content: str) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"request": body, "content": content}, f, ensure_ascii=False)
        os.replace(tmp, self.cache_dir / f"{key}.json")

    # ------------------------------------------------------------------ HTTP
    def _session(self):
        import aiohttp

        loop = asyncio.get_running_loop()
        entry = self._per_loop.get(id(loop))
        if entry is None or entry[0].closed:
            entry = (aiohttp.ClientSession(), asyncio.Semaphore(self.max_concurrency), loop)
            self._per_loop[id(loop)] = entry
        return entry[0], entry[1]

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _wait(self, attempt: int, retry_after: str | None) -> float:
        try:
            if retry_after is not None:
                return min(float(retry_after), self.max_backoff_s)
        except ValueError:
            pass  # an HTTP date; use our own backoff
        return min(self.backoff_s * 2 ** attempt, self.max_backoff_s)

    async def complete(self, messages: list[dict[str, str]], **params: Any) -> str:
        """The reply to ``messages`` (``params``: temperature, max_tokens, ... as the API names them)."""
        import aiohttp

        body = {"model": self.model, "messages": messages, **params}
        key = self.request_key(body)
        cached = self._cache_get(key)
        if cached is not None:
            self.stats["cache_hits"] += 1
            return cached
        session, limit = self._session()
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            retry_after = None
            async with limit:
                self.stats["requests"] += 1
                try:
                    async with session.post(self.url, json=body, headers=self._headers(),
                                            timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as resp:
                        text = await resp.text()
                        if resp.status == 200:
                            content = _content_of(text)
                            self._cache_put(key, body, content)
                            return content
                        last = f"HTTP {resp.status}: {text[:200]}"
                        if resp.status not in RETRY_STATUS:
                            break
                        retry_after = resp.headers.get("Retry-After")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    last = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} after {self.timeout_s}s"
            if attempt < self.retries:
                await asyncio.sleep(self._wait(attempt, retry_after))
        self.stats["failures"] += 1
        raise ChatError(f"{self.url} ({self.model}): {last}")

    async def aclose(self) -> None:
        """Close this loop's session (the runner's loop keeps its session for the process)."""
        loop_id = id(asyncio.get_running_loop())
        entry = self._per_loop.pop(loop_id, None)
        if entry is not None:
            await entry[0].close()


def _content_of(text: str) -> str:
    """The first choice's message content; a malformed body is a ChatError (not retried: the
    same server would answer the same way)."""
    try:
        content = json.loads(text)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ChatError(f"malformed chat-completions response: {text[:200]!r}") from None
    if not isinstance(content, str):
        raise ChatError(f"chat-completions content is {type(content).__name__}, not text")
    return content
