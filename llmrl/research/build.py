"""The research environment a recipe's ``agent`` section describes: its search backend, its
tools, and the agent engine that wraps the rollout engine (``llmrl.trainer.loop.make_engine``).

``agent.search`` is a corpus file (indexed once with SQLite FTS5, cached), an ``http(s)://``
URL of a server with Search-R1's ``/retrieve`` API, or ``package.module:function`` returning a
backend. ``agent.tools`` are the built-in names or ``package.module:factory`` called as
``factory(backend)`` -> ``tool(arguments, ctx) -> str``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from llmrl.imports import resolve_callable

TOOLS: dict[str, str] = {
    "web_search": "llmrl.research.tools:WebSearch",
    "browse_webpage": "llmrl.research.tools:BrowseWebpage",
}
_BUILTIN_ARGS = {"web_search": ("k", "top_k"), "browse_webpage": ("chunk_chars", "chunk_chars")}


def _is_url(search: str) -> bool:
    return search.startswith(("http://", "https://"))


def build_backend(agent) -> Any:
    """The search backend of ``agent.search`` (see the module docstring)."""
    if _is_url(agent.search):
        from llmrl.research.client import RetrieverClient

        return RetrieverClient(agent.search, timeout_s=agent.tool_timeout_s, **agent.search_args)
    if ":" in agent.search and not Path(agent.search).exists():
        return resolve_callable(agent.search, {}, key="agent.search", what="search backend")(**agent.search_args)
    from llmrl.research.index import SearchIndex, build_index

    return SearchIndex(build_index(agent.search, **agent.search_args))


def build_tools(agent, backend) -> dict[str, Callable]:
    """Tool name -> tool, in recipe order."""
    tools: dict[str, Callable] = {}
    for name in agent.tools:
        factory = resolve_callable(name, TOOLS, key="agent.tools", what="tool")
        if name in _BUILTIN_ARGS:
            arg, field = _BUILTIN_ARGS[name]
            tool = factory(backend, **{arg: getattr(agent, field)})
        else:
            tool = factory(backend)
        tools[getattr(tool, "name", name.rsplit(":", 1)[-1])] = tool
    return tools


def build_agent_engine(engine, tokenizer, agent):
    """``engine`` wrapped in the agent loop with the recipe's tools and limits."""
    from llmrl.rollout.agent import AgentEngine, AgentLimits

    limits = AgentLimits(max_turns=agent.max_turns, max_tool_response_tokens=agent.max_tool_response_tokens,
                         max_total_tokens=agent.max_total_tokens, max_call_chars=agent.max_call_chars,
                         tool_timeout_s=agent.tool_timeout_s)
    return AgentEngine(engine, tokenizer, build_tools(agent, build_backend(agent)), limits, tool_role=agent.tool_role)


def agent_problems(agent) -> list[str]:
    """What is wrong with an ``agent`` section, found at recipe load (before any model loads)."""
    if agent is None:
        return []
    problems = []
    for i, name in enumerate(agent.tools):
        try:
            resolve_callable(name, TOOLS, key=f"agent.tools[{i}]", what="tool")
        except ValueError as exc:
            problems.append(str(exc))
    s = agent.search
    if not _is_url(s) and not Path(s).exists():
        if ":" in s:
            try:
                resolve_callable(s, {}, key="agent.search", what="search backend")
            except ValueError as exc:
                problems.append(str(exc))
        else:
            problems.append(f"agent.search: {s} is neither an existing corpus file, an http(s):// URL of a "
                            "/retrieve server, nor 'package.module:function'")
    return problems
