"""Exemplars built ahead of training: a strong model's translation of every source, once.

``llmrl exemplars build --backend openai --model M --base-url URL data.jsonl --out ex.jsonl``
(or ``--directions en-zh`` for WMT22) asks the model for each source's translation and appends
``{source, src_lang, tgt_lang, exemplar}`` records to ``--out`` as they come back: an interrupted
build resumes where it stopped (sources already in the file are skipped), and with
``--cache-dir`` a rebuilt file costs no requests. The data sets read the file with
``data.args.exemplars`` (``wmt22``) or use it as a column (``file`` data sets that carry an
``exemplar`` column need no build).
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Iterable

from llmrl.rewards.translation.format import extract_translation
from llmrl.rewards.translation.languages import name_of

PROMPT = ("Translate the following {src_name} text into {tgt_name}. Reply with the translation only, "
          "nothing else.\n\n{source}")


def done_sources(out: Path) -> set[tuple[str, str]]:
    """``(tgt_lang, source)`` pairs already in ``out`` (a half-written last line is ignored)."""
    if not out.is_file():
        return set()
    seen = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            seen.add((row["tgt_lang"], row["source"]))
        except (ValueError, KeyError):
            continue
    return seen


def translate_fn(backend: str, *, model: str, prompt: str = PROMPT, max_tokens: int = 512, **args: Any):
    """``async f(rows) -> list[str | None]`` for ``backend`` ``openai`` (ChatClient; ``args``:
    base_url, max_concurrency, timeout_s, retries, cache_dir) or ``hf`` (a local causal LM)."""
    def render(r):
        return prompt.format(source=r["source"], src_name=name_of(r["src_lang"]), tgt_name=name_of(r["tgt_lang"]))

    def clean(text: str | None) -> str | None:
        # a reasoning model may think first: keep what follows </think>
        if text is None:
            return None
        return extract_translation(text, require_think="</think>" in text) or None

    if backend == "openai":
        from llmrl.rewards.chat_client import ChatClient, ChatError

        client = ChatClient(model=model, **args)

        async def one(r):
            try:
                return clean(await client.complete([{"role": "user", "content": render(r)}], temperature=0.0,
                                                   max_tokens=max_tokens))
            except ChatError:
                return None

        async def run(rows):
            return list(await asyncio.gather(*(one(r) for r in rows)))
        run.aclose = client.aclose  # type: ignore[attr-defined]
        return run
    if backend == "hf":
        from llmrl.rewards.translation.judges import HFJudge

        judge = HFJudge(model=model, max_new_tokens=max_tokens, **args)

        async def run_hf(rows):
            return [clean(t) for t in await asyncio.to_thread(judge.replies, [render(r) for r in rows])]
        return run_hf
    raise ValueError(f"--backend: {backend!r} is not one of openai, hf")


def build_exemplars(rows: Iterable[dict[str, Any]], out: str | Path, *, translate, batch_size: int = 64,
                    progress: bool = True) -> dict[str, int]:
    """Translate every row (``source``, ``src_lang``, ``tgt_lang``) not yet in ``out`` and append
    it there, batch by batch. Returns counts: ``written``, ``skipped`` (already there),
    ``failed`` (no usable answer; not written, so the next run retries them)."""
    from tqdm.auto import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = done_sources(out)
    todo, skipped = [], 0
    for r in rows:
        key = (r["tgt_lang"], r["source"])
        if key in seen:
            skipped += 1
        else:
            seen.add(key)
            todo.append(r)
    counts = {"written": 0, "skipped": skipped, "failed": 0}

    async def run_all():  # one event loop for the whole build: the client keeps one session
        with out.open("a", encoding="utf-8") as f, tqdm(total=len(todo), desc="exemplars",
                                                         disable=not progress) as bar:
            for i in range(0, len(todo), batch_size):
                batch = todo[i:i + batch_size]
                for r, text in zip(batch, await translate(batch)):
                    if text is None:
                        counts["failed"] += 1
                        continue
                    f.write(json.dumps({"source": r["source"], "src_lang": r["src_lang"], "tgt_lang": r["tgt_lang"],
                                        "exemplar": text}, ensure_ascii=False) + "\n")
                    counts["written"] += 1
                f.flush()  # a crash loses at most the batch in flight
                bar.update(len(batch))
        close = getattr(translate, "aclose", None)
        if close is not None:
            await close()

    asyncio.run(run_all())
    return counts
