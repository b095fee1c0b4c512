"""Online backends: a web-search API client and a page fetcher with text extraction.

``WebBackend(search=SerperSearch(), fetcher=PageFetcher())`` has the backend interface
(``search(query, k)``, ``page(url)``), so ``agent.search: llmrl.research.web:web_backend`` puts
the research tools on the live web. Keys come from the environment (``SERPER_API_KEY``); every
request goes through ``llmrl.research.client.request`` (timeout, retries with backoff, 429
``Retry-After``, rate limit); answers are cached on disk (SQLite, ``$LLMRL_CACHE_DIR/web``), so
a re-run or a second seed does not pay, wait or get rate-limited again. Text is extracted from
HTML with trafilatura (``pip install 'llmrl[research-web]'``).

Tests point both at servers on 127.0.0.1; nothing here is called by the offline defaults."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path

from llmrl.research.client import BackendError, RateLimiter, post_json, request
from llmrl.research.index import Hit


class DiskCache:
    """A small persistent key -> JSON value store (one SQLite file, safe across threads/processes)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._con().execute("CREATE TABLE IF NOT EXISTS kv(k TEXT PRIMARY KEY, v TEXT)")

    def _con(self) -> sqlite3.Connection:
        if getattr(self._local, "con", None) is None:
            self._local.con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        return self._local.con

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def get(self, key: str):
        row = self._con().execute("SELECT v FROM kv WHERE k = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value) -> None:
        self._con().execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (key, json.dumps(value)))


def _default_cache(name: str) -> DiskCache:
    from llmrl.paths import cache_dir

    return DiskCache(cache_dir() / "web" / f"{name}.sqlite")


class SerperSearch:
    """Google results through serper.dev (``POST {endpoint} {"q", "num"}`` with ``X-API-KEY``)."""

    def __init__(self, *, endpoint: str = "https://google.serper.dev/search", api_key_env: str = "SERPER_API_KEY",
                 timeout_s: float = 10.0, retries: int = 3, rate_per_s: float | None = 5.0,
                 cache: DiskCache | None = None):
        key = os.environ.get(api_key_env)
        if not key:
            raise ValueError(f"agent.search: web search needs an API key in ${api_key_env}")
        self.endpoint, self.headers = endpoint, {"X-API-KEY": key}
        self.opts = dict(timeout_s=timeout_s, retries=retries, limiter=RateLimiter(rate_per_s))
        self.cache = cache or _default_cache("serper")

    def search(self, query: str, k: int = 10) -> list[Hit]:
        ck = DiskCache.key("serper", self.endpoint, query, k)
        items = self.cache.get(ck)
        if items is None:
            out = post_json(self.endpoint, {"q": query, "num": k}, headers=self.headers, **self.opts)
            items = [{"title": r.get("title", ""), "url": r.get("link", ""), "snippet": r.get("snippet", "")}
                     for r in out.get("organic", [])[:k] if r.get("link")]
            self.cache.put(ck, items)
        return [Hit(id=r["url"], title=r["title"], url=r["url"], snippet=r["snippet"], score=float(k - i))
                for i, r in enumerate(items)]


def extract_text(html: str | bytes) -> str | None:
    """The main text of an HTML page (trafilatura), or None when it finds none."""
    try:
        import trafilatura
    except ImportError:
        raise ValueError("browsing the web needs trafilatura: pip install 'llmrl[research-web]'") from None
    return trafilatura.extract(html, include_comments=False, include_tables=True)


class PageFetcher:
    """GET a page (http/https only, at most ``max_bytes``), extract its text, cache it on disk."""

    def __init__(self, *, timeout_s: float = 10.0, retries: int = 2, rate_per_s: float | None = 5.0,
                 max_bytes: int = 5 << 20, cache: DiskCache | None = None):
        self.opts = dict(timeout_s=timeout_s, retries=retries, limiter=RateLimiter(rate_per_s), max_bytes=max_bytes)
        self.cache = cache or _default_cache("pages")

    def __call__(self, url: str) -> str | None:
        if not url.startswith(("http://", "https://")):
            return None
        ck = DiskCache.key("page", url)
        hit = self.cache.get(ck)
        if hit is not None:
            return hit["text"]
        try:
            html = request(url, headers={"User-Agent": "llmrl-research-agent"}, **self.opts)
        except BackendError as exc:
            if "HTTP 404" in str(exc) or "HTTP 410" in str(exc):
                return None
            raise
        text = extract_text(html)
        self.cache.put(ck, {"text": text})
        return text


class WebBackend:
    """A search API plus a page fetcher: the backend interface over the live web."""

    def __init__(self, search, fetcher: PageFetcher | None = None):
        self.searcher, self.fetcher = search, fetcher or PageFetcher()

    def search(self, query: str, k: int = 10) -> list[Hit]:
        return self.searcher.search(query, k)

    def page(self, url: str) -> str | None:
        return self.fetcher(url)


def web_backend(endpoint: str = "https://google.serper.dev/search", api_key_env: str = "SERPER_API_KEY",
                rate_per_s: float = 5.0, timeout_s: float = 10.0) -> WebBackend:
    """``agent.search: llmrl.research.web:web_backend`` (``search_args`` are these keywords)."""
    return WebBackend(SerperSearch(endpoint=endpoint, api_key_env=api_key_env, rate_per_s=rate_per_s,
                                   timeout_s=timeout_s), PageFetcher(rate_per_s=rate_per_s, timeout_s=timeout_s))
