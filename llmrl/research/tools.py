"""The research agent's tools: ``web_search`` and ``browse_webpage`` (DeepResearcher's two).

A tool is any callable ``tool(arguments: dict, ctx: ToolContext) -> str``: the parsed
``arguments`` of one ``<tool_call>`` and this trajectory's context (the URLs its searches
returned, how far each page has been read, counters). What it returns is the tool turn's text;
an exception or a timeout is turned into a short error text by the agent loop, so one bad tool
never ends or stalls the rollout.

A search backend is anything with ``search(query, k) -> list[Hit]`` and ``page(url) -> str |
None``: the embedded ``SearchIndex`` (SQLite FTS5), or ``RetrieverClient`` (any server speaking
Search-R1's ``POST /retrieve``, ours included).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from llmrl.research.index import Hit


class SearchBackend(Protocol):
    def search(self, query: str, k: int = 10) -> list[Hit]: ...

    def page(self, url: str) -> str | None: ...


@dataclass
class ToolContext:
    """Per-trajectory state the tools share: browsing is allowed only for URLs this
    trajectory's own searches returned (DeepResearcher's rule: no guessed URLs)."""

    question: str = ""
    seen_urls: set[str] = field(default_factory=set)
    read_upto: dict[str, int] = field(default_factory=dict)   # url -> characters already returned
    counts: Counter = field(default_factory=Counter)


Tool = Callable[[dict, ToolContext], str]


class ToolError(ValueError):
    """A call the tool refuses (bad arguments); shown to the model as the tool's answer."""


def _str_list(arguments: dict, key: str) -> list[str]:
    value = arguments.get(key)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ToolError(f"arguments.{key} must be a non-empty list of strings")
    return value


@dataclass
class WebSearch:
    """``web_search {"query": [str, ...]}``: the first ``max_queries`` queries, ``k`` results
    each (title, url, snippet)."""

    backend: SearchBackend
    k: int = 3
    max_queries: int = 3
    name: str = "web_search"

    def __call__(self, arguments: dict, ctx: ToolContext) -> str:
        queries = _str_list(arguments, "query")[: self.max_queries]
        blocks = []
        for q in queries:
            hits = self.backend.search(q, self.k)
            ctx.counts["searches"] += 1
            ctx.seen_urls.update(h.url for h in hits)
            lines = [f"[{i}] {h.title} ({h.url})\n{h.snippet}" for i, h in enumerate(hits, 1)] or ["no results"]
            blocks.append(f"query: {q}\n" + "\n".join(lines))
        return "\n\n".join(blocks)


@dataclass
class BrowseWebpage:
    """``browse_webpage {"url_list": [str, ...]}``: the next ``chunk_chars`` of each page this
    trajectory's searches returned (a second visit continues where the first stopped, so it
    returns only new text). ``reader``, when given, is a reading agent:
    ``reader(question, text) -> str`` summarises the chunk (e.g. through any generation
    backend) instead of returning it raw."""

    backend: SearchBackend
    chunk_chars: int = 1000
    max_urls: int = 3
    reader: Callable[[str, str], str] | None = None
    name: str = "browse_webpage"

    def __call__(self, arguments: dict, ctx: ToolContext) -> str:
        out = []
        for url in _str_list(arguments, "url_list")[: self.max_urls]:
            if url not in ctx.seen_urls:
                out.append(f"{url}: not among this search's results; search first, then browse a result url")
                continue
            text = self.backend.page(url)
            ctx.counts["browses"] += 1
            if text is None:
                out.append(f"{url}: page not found")
                continue
            start = ctx.read_upto.get(url, 0)
            chunk = text[start:start + self.chunk_chars]
            ctx.read_upto[url] = start + len(chunk)
            if not chunk:
                out.append(f"{url}: nothing new on this page")
                continue
            more = " [more: browse again to continue]" if start + len(chunk) < len(text) else ""
            out.append(f"{url}:\n{self.reader(ctx.question, chunk) if self.reader else chunk}{more}")
        return "\n\n".join(out)


def research_tools(backend: SearchBackend, *, k: int = 3, chunk_chars: int = 1000,
                   reader: Callable[[str, str], str] | None = None) -> dict[str, Any]:
    """The default pair over one backend, by name."""
    return {"web_search": WebSearch(backend, k=k), "browse_webpage": BrowseWebpage(backend, chunk_chars, reader=reader)}
