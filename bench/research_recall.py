"""Local search index recall on HotpotQA dev (500 questions, 4,858-passage corpus): the share of
questions whose gold paragraph (any / both) is in the top k when queried with the question
text, and the query latency, for the SQLite FTS5 default and bm25s (``pip install bm25s``,
the research-bench extra). Prints JSON.

    python bench/research_recall.py [--k 10] [--engines fts5,bm25s]
"""
from __future__ import annotations

import argparse
import gzip
import json
import statistics
import tempfile
import time
from pathlib import Path

from llmrl.paths import find_local_data
from llmrl.research.index import SearchIndex, build_index, read_corpus


def questions() -> list[dict]:
    path = find_local_data("multihop/hotpotqa_dev_distractor_500.jsonl.gz")
    return [json.loads(line) for line in gzip.open(path, "rt")]


def fts5_engine(corpus: Path):
    t0 = time.perf_counter()
    idx = SearchIndex(build_index(corpus, Path(tempfile.mkdtemp()) / "i.sqlite"))
    build_s = time.perf_counter() - t0
    return (lambda q, k: [h.id for h in idx.search(q, k)]), build_s


def bm25s_engine(corpus: Path):
    import bm25s

    t0 = time.perf_counter()
    rows = list(read_corpus(corpus))
    ids = [r["passage_id"] for r in rows]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([f"{r['title']} {r['text']}" for r in rows], stopwords="en", show_progress=False),
                    show_progress=False)
    build_s = time.perf_counter() - t0

    def search(q: str, k: int) -> list[str]:
        docs, _ = retriever.retrieve(bm25s.tokenize([q], stopwords="en", show_progress=False), k=k,
                                     show_progress=False)
        return [ids[i] for i in docs[0]]
    return search, build_s


ENGINES = {"fts5": fts5_engine, "bm25s": bm25s_engine}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--engines", default="fts5,bm25s")
    args = ap.parse_args()
    corpus = find_local_data("multihop/hotpotqa_dev500_corpus.jsonl.gz")
    qs = questions()
    out = {"questions": len(qs), "passages": sum(1 for _ in read_corpus(corpus)), "k": args.k, "engines": {}}
    for name in args.engines.split(","):
        search, build_s = ENGINES[name](corpus)
        any_hit = both = 0
        lat = []
        for q in qs:
            gold = {c["passage_id"] for c in q["contexts"] if c["is_supporting"]}
            t0 = time.perf_counter()
            got = set(search(q["question"], args.k))
            lat.append(time.perf_counter() - t0)
            any_hit += bool(gold & got)
            both += gold <= got
        lat.sort()
        out["engines"][name] = {"recall_any_gold": any_hit / len(qs), "recall_both_gold": both / len(qs),
                                "build_s": round(build_s, 3), "latency_ms_median": round(1000 * statistics.median(lat), 2),
                                "latency_ms_p95": round(1000 * lat[int(0.95 * len(lat))], 2)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
