"""Multi-hop QA for research agents: HotpotQA (distractor dev 500, train 100), Bamboogle, or any
JSON Lines file with ``question`` and ``answer`` / ``answers``, read in place (``llmrl.paths``).

Columns: ``prompt`` (the question, optionally inside an ``instruction`` template with
``{question}``), ``question``, ``answers`` (list, what ``research_f1`` compares against).
HotpotQA's own search corpus is ``multihop/hotpotqa_dev500_corpus.jsonl.gz`` (every gold
paragraph is in it), which ``agent.search`` can point at."""
from __future__ import annotations

import random
from pathlib import Path

from llmrl.paths import locate_data

FILES = {
    "hotpotqa": "multihop/hotpotqa_dev_distractor_500.jsonl.gz",
    "hotpotqa_train": "multihop/hotpotqa_train_distractor_100.jsonl.gz",
    "bamboogle": "multihop/bamboogle.jsonl",
}

# DeepResearcher's instruction, shortened: the tag protocol the reward checks.
INSTRUCTION = (
    "Answer the question. Think inside <think>...</think> before every action. To search, write "
    '<tool_call>{{"name": "web_search", "arguments": {{"query": ["..."]}}}}</tool_call>; to read a result, '
    '<tool_call>{{"name": "browse_webpage", "arguments": {{"url_list": ["..."]}}}}</tool_call>. '
    "Results come back inside <tool_response>. When you know, answer inside <answer>...</answer> "
    "with a few words.\nQuestion: {question}"
)


def read_questions(path: str | Path) -> list[dict]:
    """{question, answers} rows of a .jsonl(.gz) file; ValueError naming the file and line."""
    from llmrl.data.jsonl import read_jsonl

    rows = []
    for n, r in read_jsonl(path):
        r = r if isinstance(r, dict) else {}
        answers = r.get("answers") or ([r["answer"]] if isinstance(r.get("answer"), str) else None)
        if not answers or not isinstance(r.get("question"), str):
            raise ValueError(f"{path}:{n}: needs a 'question' string and 'answer' or 'answers'")
        rows.append({"question": r["question"], "answers": [str(a) for a in answers]})
    return rows


def multihop_dataset(split: str, n: int | None = None, seed: int = 0, *, name: str = "hotpotqa",
                     path: str | None = None, instruction: str | None = INSTRUCTION, source: str = "local"):
    """``name`` one of FILES, or ``path`` to any question file. The whole file is the test
    split; ``train`` uses ``hotpotqa_train`` for HotpotQA, else the same file (say so in results)."""
    from datasets import Dataset

    if path is None:
        if name not in FILES:
            raise ValueError(f"data.args.name: unknown multihop set {name!r}; use one of {sorted(FILES)} or data.args.path")
        rel = FILES["hotpotqa_train"] if (name == "hotpotqa" and split == "train") else FILES[name]
        found = locate_data(rel, source=source, what=f"multihop {name}")
        path = str(found)
    rows = read_questions(path)
    if split == "train":
        random.Random(seed).shuffle(rows)
    if n is not None:
        rows = rows[:n]
    fmt = (lambda q: instruction.format(question=q)) if instruction else (lambda q: q)
    return Dataset.from_dict({"prompt": [fmt(r["question"]) for r in rows], "question": [r["question"] for r in rows],
                              "answers": [r["answers"] for r in rows]})
