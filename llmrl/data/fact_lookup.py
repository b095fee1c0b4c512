"""Procedural fact lookup: a generated world whose facts are findable only by searching.

Each entity (a made-up name such as ``Vokral``) has a capital (a made-up word); its one passage
in the generated corpus states it. The passages are short and the traces spare (a 2-layer
character model must learn to copy the name into the query and the answer out of the result). Train and test questions ask about disjoint
entities, so a model cannot memorise held-out answers: it must search for the entity and copy
the answer from the tool result. This is the tiny research recipe's task
(``recipes/tiny/research_grpo.yaml``): a 2-layer character model can learn it on a CPU.

Columns: ``prompt`` (the tiny chat template's user turn), ``answers`` (gold list for
``research_f1``), ``question``, and ``answer``: a demonstration trace (search call, the real
tool turn, answer) that the supervised warm start trains on, rendered exactly as the agent
loop appends it (same tools, same chat template), so warm start and RL see the same tokens.
With ``guess_fraction`` > 0 that share of the "warm" split's demonstrations answer from
"memory" instead (``guess``: a made-up word, no tool call), like an instruct model that often
does not search: the warm start then searches on only part of the questions, and RL has a
behaviour to learn (searching pays, guessing scores 0).

    >>> ds = fact_lookup_dataset("test", n=2, seed=0)
    >>> ds[0]["question"].startswith("capital of "), len(ds[0]["answers"])
    (True, 1)
"""
from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path

_ONSETS = "b d f g k l m n p r s t v z br dr gr kr pl st tr".split()
_VOWELS = "a e i o u".split()
RELATIONS = ("capital",)
VERSION = 2   # bump when the generated world or its passages change (the corpus file is cached by it)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)).capitalize()


@lru_cache(maxsize=8)
def world(num_entities: int = 400, world_seed: int = 0) -> tuple[dict, ...]:
    """The entities, each {id, name, capital}; names unique, so one search finds one."""
    rng = random.Random(world_seed)
    names: set[str] = set()
    out = []
    while len(out) < num_entities:
        name = _word(rng, 2) + rng.choice(["l", "n", "r", "x"])
        if name in names:
            continue
        names.add(name)
        out.append({"id": f"f{len(out):05d}", "name": name, "capital": _word(rng, 2)})
    return tuple(out)


def passage(e: dict) -> dict:
    return {"passage_id": e["id"], "title": e["name"],
            "text": f"Capital: {e['capital']}."}


def corpus_path(num_entities: int = 400, world_seed: int = 0) -> Path:
    """The world's corpus as JSON Lines in the llmrl cache (written once)."""
    from llmrl.paths import cache_dir

    path = cache_dir() / "fact_lookup" / f"corpus_v{VERSION}_{num_entities}_{world_seed}.jsonl"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(passage(e)) + "\n" for e in world(num_entities, world_seed)))
        tmp.replace(path)
    return path


def search_backend(num_entities: int = 400, world_seed: int = 0):
    """The world's SQLite index (``agent.search: llmrl.data.fact_lookup:search_backend``)."""
    from llmrl.research.index import SearchIndex, build_index

    return SearchIndex(build_index(corpus_path(num_entities, world_seed)), snippet_chars=200)


def demonstration(e: dict, relation: str, backend, tokenizer, *, top_k: int = 1) -> str:
    """One search-then-answer trace, with the tool turn the agent loop would append."""
    from llmrl.research.tools import ToolContext, WebSearch
    from llmrl.rollout.agent import ToolTurns

    call = {"name": "web_search", "arguments": {"query": [e["name"]]}}
    first = f"<think>s</think><tool_call>{json.dumps(call)}</tool_call>"
    result = WebSearch(backend, k=top_k)(call["arguments"], ToolContext())
    env = tokenizer.decode(ToolTurns(tokenizer).ids(result))
    return first + env + f"<think>a</think><answer>{e[relation]}</answer>"


def guess(rng: random.Random, answer: str) -> str:
    """A trace that answers without searching: a made-up word from the world's generator (never
    the true ``answer``), so it scores F1 0 like a wrong guess from memory.

    >>> guess(random.Random(0), "Bada")
    '<think>a</think><answer>Vodi</answer>'
    """
    word = _word(rng, 2)
    while word == answer:
        word = _word(rng, 2)
    return f"<think>a</think><answer>{word}</answer>"


def split_entities(split: str, num_entities: int = 400, world_seed: int = 0, *, test_fraction: float = 0.25,
                   warm_fraction: float = 0.0) -> tuple[dict, ...]:
    """The entities a split asks about: the first ``warm_fraction`` of the world is "warm" (the
    warm start's demonstrations), the last ``test_fraction`` is "test", "train" (RL) is between.

    Three disjoint sets, so that neither RL nor the held-out evaluation asks about an entity whose
    answer the warm start could have memorised: a warm start on the RL entities' own traces made
    RL start at ~0.8 reward with flat groups and nothing left to learn (docs/benchmarks.md).

    >>> [len(split_entities(s, 40, warm_fraction=0.5)) for s in ("warm", "train", "test")]
    [20, 10, 10]
    """
    if split not in ("warm", "train", "test"):
        raise ValueError(f"data.name fact_lookup: split must be 'warm', 'train' or 'test', got {split!r}")
    if not (0.0 <= warm_fraction and 0.0 < test_fraction and warm_fraction + test_fraction < 1.0):
        raise ValueError(f"data.args: fact_lookup needs 0 <= warm_fraction, 0 < test_fraction and "
                         f"warm_fraction + test_fraction < 1, got {warm_fraction} and {test_fraction}")
    entities = world(num_entities, world_seed)
    warm, cut = int(len(entities) * warm_fraction), int(len(entities) * (1 - test_fraction))
    pool = {"warm": entities[:warm], "train": entities[warm:cut], "test": entities[cut:]}[split]
    if not pool:
        raise ValueError(f"data.args: fact_lookup split {split!r} has no entities (num_entities={num_entities}, "
                         f"warm_fraction={warm_fraction}, test_fraction={test_fraction})")
    return pool


def fact_lookup_dataset(split: str, n: int | None = None, seed: int = 0, *, num_entities: int = 400,
                        world_seed: int = 0, test_fraction: float = 0.25, warm_fraction: float = 0.0,
                        top_k: int = 1, guess_fraction: float = 0.0):
    """Questions about the split's entities (``split_entities``: "warm", "train" or "test").

    ``guess_fraction``: the share of the "warm" split's demonstrations that answer without a
    tool call (``guess``), drawn per row with a seeded rng, not by any feature of the question,
    so the warm-started model searches with probability ~1 - guess_fraction on every prompt and
    RL samples both behaviours. The "train" and "test" splits are the same whatever its value.

    >>> ds = fact_lookup_dataset("warm", n=8, num_entities=40, warm_fraction=0.5, guess_fraction=0.5)
    >>> [a[:16] for a in ds["answer"][:3]]
    ['<think>a</think>', '<think>s</think>', '<think>a</think>']
    """
    from datasets import Dataset

    from llmrl.models.tiny import build_char_tokenizer

    if not 0.0 <= guess_fraction < 1.0:
        raise ValueError(f"data.args.guess_fraction: fact_lookup needs 0 <= guess_fraction < 1, got {guess_fraction!r}")
    pool = split_entities(split, num_entities, world_seed, test_fraction=test_fraction, warm_fraction=warm_fraction)
    rng = random.Random(f"{seed}-{split}")
    guesses = random.Random(f"{seed}-{split}-guess")   # its own stream: the questions do not depend on it
    pairs = [(e, r) for e in pool for r in RELATIONS]
    rng.shuffle(pairs)
    if n is not None:
        pairs = [pairs[i % len(pairs)] for i in range(n)]
    backend, tok = search_backend(num_entities, world_seed), build_char_tokenizer()
    rows = {"prompt": [], "question": [], "answers": [], "answer": []}
    for e, r in pairs:
        q = f"{r} of {e['name']}?"
        rows["question"].append(q)
        rows["prompt"].append(f"<|user|>{q}<|end|><|assistant|>")
        rows["answers"].append([e[r]])
        if split == "warm" and guess_fraction and guesses.random() < guess_fraction:
            rows["answer"].append(guess(guesses, e[r]))
        else:
            rows["answer"].append(demonstration(e, r, backend, tok, top_k=top_k))
    return Dataset.from_dict(rows)
