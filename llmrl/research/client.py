"""HTTP clients for search backends: any server with Search-R1's ``POST /retrieve`` API (ours,
``llmrl search serve``, or Search-R1's own FAISS server).

Tools are called from many trajectories at once and face slow, failing and rate-limited
services, so every request has a timeout, failures are retried with exponential backoff (HTTP
429 and 5xx, connection errors; a 429's ``Retry-After`` is honoured up to ``max_backoff_s``),
requests are spaced to at most ``rate_per_s``, and answers are cached (same query, same k).
Only the standard library is used."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

from llmrl.research.index import Hit


class BackendError(RuntimeError):
    """The service failed after every retry; the tool's answer says so."""


class RateLimiter:
    """At most ``rate_per_s`` calls per second across threads (None: unlimited)."""

    def __init__(self, rate_per_s: float | None):
        self.interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        time.sleep(max(0.0, slot - now))


def post_json(url: str, body: dict, *, headers: dict[str, str] | None = None, **retry) -> dict:
    """POST ``body`` as JSON and return the JSON answer, retrying transient failures."""
    raw = request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})},
                  **retry)
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise BackendError(f"{url}: the answer is not JSON") from None


def request(url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None, timeout_s: float = 10.0,
            retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 8.0, limiter: RateLimiter | None = None,
            max_bytes: int = 10 << 20) -> bytes:
    """GET (or POST ``data``) with a timeout, at most ``max_bytes`` read, retries with backoff."""
    last = ""
    for attempt in range(retries + 1):
        if limiter is not None:
            limiter.wait()
        req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.read(max_bytes)
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code != 429 and exc.code < 500:
                raise BackendError(f"{url}: {last}: {exc.read()[:200].decode(errors='replace')}") from None
            wait = backoff_s * 2 ** attempt
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            if retry_after and retry_after.replace(".", "", 1).isdigit():
                wait = float(retry_after)
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            wait = backoff_s * 2 ** attempt
        if attempt < retries:
            time.sleep(min(wait, max_backoff_s))
    raise BackendError(f"{url}: failed after {retries + 1} attempts ({last})")


class RetrieverClient:
    """A search backend over HTTP (Search-R1's ``/retrieve``; ``/page`` for browsing, which
    ``llmrl search serve`` adds). Same interface as ``SearchIndex``."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, retries: int = 3, backoff_s: float = 0.5,
                 rate_per_s: float | None = None, cache_size: int = 10000):
        self.base_url = base_url.rstrip("/")
        self.opts = dict(timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, limiter=RateLimiter(rate_per_s))
        self._cache: dict[tuple, object] = {}
        self.cache_size = cache_size

    def _cached(self, key: tuple, fetch):
        if key in self._cache:
            return self._cache[key]
        value = fetch()
        if len(self._cache) < self.cache_size:
            self._cache[key] = value
        return value

    def search(self, query: str, k: int = 10) -> list[Hit]:
        def fetch() -> list[Hit]:
            out = post_json(f"{self.base_url}/retrieve", {"queries": [query], "topk": k, "return_scores": True},
                            **self.opts)
            hits = []
            for item in out["result"][0]:
                doc = item["document"]
                title, _, text = doc["contents"].partition("\n")
                hits.append(Hit(id=str(doc.get("id", "")), title=title.strip('"'),
                                url=doc.get("url") or f"corpus://{doc.get('id', '')}",
                                snippet=text[:200], score=float(item.get("score", 0.0))))
            return hits
        return self._cached(("search", query, k), fetch)

    def page(self, url: str) -> str | None:
        def fetch() -> str | None:
            try:
                return post_json(f"{self.base_url}/page", {"url": url}, **self.opts)["text"]
            except BackendError as exc:
                if "HTTP 404" in str(exc):
                    return None
                raise
        return self._cached(("page", url), fetch)
