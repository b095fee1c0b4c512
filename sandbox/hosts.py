"""Health of the sandbox servers an :class:`~llmrl.sandbox.HTTPExecutor` fans out to.

A host is *up* until a request to it fails (connection refused or reset, HTTP 5xx, timeout);
then it is *down* and takes no work until its health probe (``GET /health``) succeeds. Probes
of a down host are spaced by an exponential backoff (``backoff_s``, doubling up to
``max_backoff_s``), so a dead host costs one cheap probe per backoff period, never a job. The
state lives in the executor, so it carries over from one reward call to the next.

Counters per host (``HostPool.stats()``): chunks and jobs it completed, failed requests, how
often it was marked down, its mean request time and the last error: cheap, and enough to see
which host is slow or flapping.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("llmrl.sandbox.hosts")


@dataclass
class Host:
    """One server's state. ``retry_at`` (monotonic seconds) is when a down host is probed next."""

    url: str
    up: bool = True
    retry_at: float = 0.0
    backoff_s: float = 0.0
    last_error: str = ""
    chunks: int = 0
    jobs: int = 0
    failures: int = 0
    marked_down: int = 0
    request_s: float = 0.0


class HostPool:
    """Up/down state and counters of several hosts (thread-safe: reward calls may come from
    different threads, each with its own event loop)."""

    def __init__(self, urls: list[str], *, backoff_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        if backoff_s <= 0 or max_backoff_s < backoff_s:
            raise ValueError(f"HostPool: need 0 < backoff_s <= max_backoff_s, got {backoff_s}, {max_backoff_s}")
        self.hosts = [Host(u) for u in urls]
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self._lock = threading.Lock()

    def any_up(self) -> bool:
        return any(h.up for h in self.hosts)

    def mark_down(self, host: Host, error: str) -> None:
        """A request or probe failed: no work until a probe after the (doubled) backoff succeeds."""
        with self._lock:
            host.failures += 1
            host.last_error = error
            host.backoff_s = min(self.max_backoff_s, host.backoff_s * 2 if host.backoff_s else self.backoff_s)
            host.retry_at = time.monotonic() + host.backoff_s
            was_up, host.up = host.up, False
            if was_up:
                host.marked_down += 1
        if was_up:
            log.warning("sandbox server %s marked down (%s); probing it again in %.1fs", host.url, error,
                        host.backoff_s)

    def mark_up(self, host: Host) -> None:
        """Its health probe answered: it takes work again, with the backoff reset."""
        with self._lock:
            was_down, host.up, host.backoff_s = not host.up, True, 0.0
        if was_down:
            log.warning("sandbox server %s is healthy again", host.url)

    def record(self, host: Host, jobs: int, seconds: float) -> None:
        """A chunk of ``jobs`` jobs completed on ``host`` in ``seconds``."""
        with self._lock:
            host.chunks += 1
            host.jobs += jobs
            host.request_s += seconds

    def stats(self) -> dict[str, dict]:
        """Per host: up, chunks, jobs, failures, marked_down, request_s_mean, last_error."""
        with self._lock:
            return {h.url: {"up": h.up, "chunks": h.chunks, "jobs": h.jobs, "failures": h.failures,
                            "marked_down": h.marked_down,
                            "request_s_mean": h.request_s / h.chunks if h.chunks else 0.0,
                            "last_error": h.last_error} for h in self.hosts}

    def describe(self) -> str:
        """Each host with its last error, for messages."""
        return "; ".join(f"{h.url} ({h.last_error or 'no error recorded'})" for h in self.hosts)


def parse_server_urls(value: str | list[str] | tuple[str, ...], *, key: str = "sandbox") -> list[str]:
    """Server URLs from a comma-separated string or a list, each checked (http/https, a host, a
    valid port); ``ValueError`` names ``key`` and the bad entry.

    >>> parse_server_urls("http://a:8910, http://b:8910")
    ['http://a:8910', 'http://b:8910']
    >>> parse_server_urls(["http://10.0.0.5:8910"])
    ['http://10.0.0.5:8910']
    """
    from urllib.parse import urlsplit

    items = value.split(",") if isinstance(value, str) else list(value)
    urls = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{key}[{i}]: {item!r} is not a URL string; give 'http://host:port' entries")
        url = item.strip()
        if not url:
            continue
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{key}: {url!r} is not a valid URL ({exc}); use http://host:port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{key}: {url!r} is not an http(s)://host[:port] URL of a `llmrl sandbox serve` "
                             "server; use 'local', a URL, several separated by commas, or a list of URLs")
        if port == 0:
            raise ValueError(f"{key}: {url!r} has port 0; give the port the server listens on")
        urls.append(url.rstrip("/"))
    if not urls:
        raise ValueError(f"{key}: no server URL in {value!r}; use 'local' or http://host:port entries")
    return urls
