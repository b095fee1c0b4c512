"""The embedded search backend: a local corpus (JSON Lines of title/text) in a SQLite FTS5
index, ranked by FTS5's built-in BM25.

SQLite ships with Python, so the default research environment needs no service, no GPU and
no network (Search-R1 needs a FAISS index on a GPU; DeepResearcher a paid web API). The index
is built once into the llmrl cache (``llmrl index build corpus.jsonl``) and
reopened read-only by every search; each thread gets its own connection (SQLite connections
are not shared across threads).

Every passage gets a URL: its own ``url`` field, else ``corpus://<passage_id>``, so
``browse_webpage`` can read it back from the same file.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

_WORD = re.compile(r"\w+", re.UNICODE)
# Words nearly every passage has: BM25 gives them ~0 weight anyway, but each one in an OR query
# makes SQLite walk its whole posting list (median query latency 35 ms -> see docs/research.md).
STOPWORDS = frozenset("""a an and are as at be by did do does for from had has have he her his how in is it its
of on or she that the their them they this to was were what when where which who whom whose why will with""".split())
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Hit:
    """One search result: what web_search shows (title, url, snippet) plus the id and BM25 score
    (larger = better; FTS5's bm25() is negated)."""

    id: str
    title: str
    url: str
    snippet: str
    score: float


def read_corpus(path: str | Path) -> Iterator[dict]:
    """Rows of a ``.jsonl`` / ``.jsonl.gz`` corpus; each needs ``text`` (``title``, ``url``,
    ``passage_id`` / ``id`` optional). ValueError naming the file and line otherwise."""
    from llmrl.data.jsonl import read_jsonl

    if not Path(path).exists():
        raise ValueError(f"corpus file {path} does not exist")
    for n, row in read_jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ValueError(f"{path}:{n}: each line must be an object with a 'text' string")
        yield row


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{SCHEMA_VERSION}".encode()).hexdigest()[:16]


def default_index_path(corpus: str | Path) -> Path:
    """Where ``build_index`` caches the index of ``corpus``: the llmrl cache
    (``$LLMRL_CACHE_DIR/search``), named by the corpus' fingerprint (data folders stay read-only)."""
    from llmrl.paths import cache_dir

    corpus = Path(corpus)
    if not corpus.exists():
        raise ValueError(f"corpus file {corpus} does not exist")
    folder = cache_dir() / "search"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{corpus.name}.{_fingerprint(corpus)}.fts5.sqlite"


def build_index(corpus: str | Path, index_path: str | Path | None = None, *, force: bool = False) -> Path:
    """Index ``corpus`` into ``index_path`` (default: ``default_index_path``), once: an existing
    index for the same corpus file (size, mtime) is reused unless ``force``. Written to a
    temporary file and renamed, so a killed build never leaves a half index under the name."""
    corpus = Path(corpus)
    out = Path(index_path) if index_path is not None else default_index_path(corpus)
    fp = _fingerprint(corpus) if corpus.exists() else ""
    if out.exists() and not force:
        try:
            with sqlite3.connect(f"file:{out}?mode=ro", uri=True) as con:
                if con.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone() == (fp,):
                    return out
        except sqlite3.DatabaseError:
            pass
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    con.executescript("""
        CREATE TABLE docs(rowid INTEGER PRIMARY KEY, id TEXT UNIQUE, title TEXT, url TEXT UNIQUE, text TEXT);
        CREATE VIRTUAL TABLE fts USING fts5(title, text, content='docs', content_rowid='rowid',
                                            tokenize='porter unicode61 remove_diacritics 2');
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
    """)
    rows = []
    for i, r in enumerate(read_corpus(corpus)):
        pid = str(r.get("passage_id", r.get("id", i)))
        rows.append((i + 1, pid, r.get("title", "") or "", r.get("url") or f"corpus://{pid}", r["text"]))
    if not rows:
        raise ValueError(f"corpus file {corpus} has no passages")
    try:
        con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", rows)
    except sqlite3.IntegrityError as exc:
        raise ValueError(f"corpus file {corpus}: passage ids and urls must be unique ({exc})") from None
    con.execute("INSERT INTO fts(rowid, title, text) SELECT rowid, title, text FROM docs")
    con.execute("INSERT INTO fts(fts) VALUES ('optimize')")
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("fingerprint", fp), ("corpus", str(corpus))])
    con.commit()
    con.close()
    tmp.replace(out)
    return out


def fts_query(text: str) -> str | None:
    """A free-text query as an FTS5 expression: every word quoted (so no user text is FTS5
    syntax: ``AND``, ``*``, quotes, columns), OR-ed, so BM25 ranks by the words that match;
    ``STOPWORDS`` dropped.

    >>> fts_query('Who founded "Rialto" AND *?')
    '"founded" OR "rialto"'
    """
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))
    words = [w for w in words if w not in STOPWORDS] or words   # a query of only stopwords keeps them
    return " OR ".join(f'"{w}"' for w in words[:64]) or None


class SearchIndex:
    """Read-only searches over a built index; safe to share across threads.

    >>> import tempfile, pathlib, json
    >>> d = pathlib.Path(tempfile.mkdtemp()); c = d / "c.jsonl"
    >>> _ = c.write_text("\\n".join(json.dumps(r) for r in [{"title": "Paris", "text": "Capital of France."},
    ...                                                  {"title": "Rome", "text": "Capital of Italy."}]))
    >>> idx = SearchIndex(build_index(c))
    >>> [h.title for h in idx.search("capital of Italy", k=1)], idx.page("corpus://0")[:5]
    (['Rome'], 'Paris')
    """

    def __init__(self, index_path: str | Path, *, snippet_chars: int = 200):
        self.path = Path(index_path)
        if not self.path.exists():
            raise ValueError(f"search index {self.path} does not exist; build it with `llmrl index build CORPUS`")
        self.snippet_chars = snippet_chars
        self._local = threading.local()
        self.size = self._con().execute("SELECT count(*) FROM docs").fetchone()[0]

    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        return con

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The top ``k`` passages for ``query`` by BM25 (title and text weighted equally)."""
        q = fts_query(query)
        if q is None or k <= 0:
            return []
        rows = self._con().execute(
            "SELECT d.id, d.title, d.url, d.text, -bm25(fts) FROM fts JOIN docs d ON d.rowid = fts.rowid "
            "WHERE fts MATCH ? ORDER BY bm25(fts) LIMIT ?", (q, int(k))).fetchall()
        return [Hit(id=i, title=t, url=u, snippet=_snippet(x, self.snippet_chars), score=float(s))
                for i, t, u, x, s in rows]

    def passage(self, url: str) -> tuple[str, str] | None:
        """(title, text) of the passage at ``url``, or None if the index has none."""
        return self._con().execute("SELECT title, text FROM docs WHERE url = ?", (url,)).fetchone()

    def page(self, url: str) -> str | None:
        """The full text of the passage at ``url`` (title first), or None if the index has none."""
        row = self.passage(url)
        return None if row is None else (f"{row[0]}\n{row[1]}" if row[0] else row[1])


def _snippet(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " ..."
