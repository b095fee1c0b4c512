"""The search backends: the SQLite FTS5 index on the real HotpotQA corpus, the HTTP server
(Search-R1's /retrieve) under malformed and oversized requests, and the client against slow,
failing and rate-limited servers, all on 127.0.0.1."""
import gzip
import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmrl.paths import find_local_data
from llmrl.research.client import BackendError, RetrieverClient
from llmrl.research.index import SearchIndex, build_index
from llmrl.research.server import make_server, serve_in_thread
from llmrl.research.tools import ToolContext, research_tools
from llmrl.rollout.agent import run_calls

needs_hotpot = pytest.mark.requires_data("hotpotqa")


def _hotpot_file(name: str) -> Path:
    return find_local_data(f"multihop/{name}")


@pytest.fixture(scope="module")
def hotpot(tmp_path_factory):
    return SearchIndex(build_index(_hotpot_file("hotpotqa_dev500_corpus.jsonl.gz"),
                                   tmp_path_factory.mktemp("ix") / "hp.sqlite"))


@pytest.fixture(scope="module")
def server(hotpot):
    srv = make_server(hotpot, "127.0.0.1", 0, max_body_bytes=10_000)
    serve_in_thread(srv)
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


@needs_hotpot
def test_index_finds_gold_paragraphs(hotpot):
    rows = [json.loads(line) for line in gzip.open(_hotpot_file("hotpotqa_dev_distractor_500.jsonl.gz"), "rt")][:100]
    found = 0
    for r in rows:
        gold = {c["passage_id"] for c in r["contexts"] if c["is_supporting"]}
        found += bool(gold & {h.id for h in hotpot.search(r["question"], 10)})
    assert found / len(rows) >= 0.8
    # hostile query text is data, not FTS5 syntax
    hostile = hotpot.search('Mount Plim" NEAR( * title: OR AND', 3)         # quotes, operators, columns
    assert [h.title for h in hostile] == [h.title for h in hotpot.search("Mount Plim NEAR title OR AND", 3)]
    assert hotpot.search("", 3) == [] and hotpot.search("?!*", 3) == []


def test_index_is_built_once(tmp_path):
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps({"title": "A", "text": "alpha"}) + "\n")
    p = build_index(c, tmp_path / "i.sqlite")
    mtime = p.stat().st_mtime_ns
    assert build_index(c, p).stat().st_mtime_ns == mtime        # reused
    c.write_text(json.dumps({"title": "A", "text": "alpha"}) + "\n" + json.dumps({"text": "beta"}) + "\n")
    assert SearchIndex(build_index(c, p)).size == 2             # corpus changed: rebuilt
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        build_index(tmp_path / "bad.jsonl", tmp_path / "b.sqlite")


def _post(url, body: bytes, headers=None):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@needs_hotpot
def test_server_speaks_search_r1_and_survives_bad_requests(server):
    q = {"queries": ["Which magazine was started first, Arthur's Magazine or First for Women?"], "topk": 3,
         "return_scores": True}
    code, out = _post(server + "/retrieve", json.dumps(q).encode())
    assert code == 200 and len(out["result"][0]) == 3
    assert out["result"][0][0]["document"]["contents"].startswith('"') and "score" in out["result"][0][0]
    bad = [b"{not json", b"[1, 2]", json.dumps({"queries": "x"}).encode(), json.dumps({"queries": [1]}).encode(),
           json.dumps({"queries": ["x"], "topk": 10**9}).encode(), json.dumps({"queries": ["x"], "topk": "3"}).encode(),
           b"\xff\xfe\x00", json.dumps({"queries": ["x" * 20_000]}).encode()]
    assert [_post(server + "/retrieve", b)[0] for b in bad] == [400, 400, 400, 400, 400, 400, 400, 413]
    assert _post(server + "/nope", b"{}")[0] == 404
    # a lying Content-Length (claims 1 GB) and raw junk on the socket
    host, port = server.removeprefix("http://").split(":")
    for raw in (b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{",
                b"\x00\x01garbage\r\n\r\n", b"POST /retrieve HTTP/1.1\r\nContent-Length: abc\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            s.recv(1000)
    assert _post(server + "/retrieve", json.dumps(q).encode())[0] == 200     # still serving


@needs_hotpot
def test_client_and_tools_over_http(server, hotpot):
    client = RetrieverClient(server)
    tools = research_tools(client, k=3)
    ctx = ToolContext()
    text = tools["web_search"]({"query": ["Arthur's Magazine"]}, ctx)
    assert "Arthur's Magazine" in text and ctx.seen_urls
    url = sorted(ctx.seen_urls)[0]
    first = tools["browse_webpage"]({"url_list": [url, "https://evil.example/x"]}, ctx)
    assert hotpot.page(url)[:50] in first and "not among this search's results" in first
    assert client.page("corpus://nope") is None


class _Flaky(BaseHTTPRequestHandler):
    """/slow never answers in time, /fail is a 500, /limited answers 429 twice then works."""
    hits: dict[str, int] = {}

    def log_message(self, *a):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        n = _Flaky.hits[self.path] = _Flaky.hits.get(self.path, 0) + 1
        if self.path.startswith("/slow"):
            time.sleep(3)
        if self.path.startswith("/fail") or (self.path.startswith("/limited") and n <= 2):
            self.send_response(500 if self.path.startswith("/fail") else 429)
            self.send_header("Retry-After", "0.05")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"result": [[{"document": {"id": "d", "contents": '"T"\ntext'}, "score": 1.0}]]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_slow_failing_and_rate_limited_backends_do_not_stall_the_batch():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        opts = dict(retries=3, backoff_s=0.01)
        slow = research_tools(RetrieverClient(base + "/slow", timeout_s=0.3, retries=0), k=1)["web_search"]
        fail = research_tools(RetrieverClient(base + "/fail", **opts), k=1)["web_search"]
        limited = research_tools(RetrieverClient(base + "/limited", **opts), k=1)["web_search"]
        hung = research_tools(RetrieverClient(base + "/slow", timeout_s=30, retries=0), k=1)["web_search"]
        t0 = time.monotonic()
        out = run_calls([lambda t=t: t({"query": ["q"]}, ToolContext()) for t in (slow, fail, limited, hung)],
                        timeout_s=1.5)
        took = time.monotonic() - t0
        assert took < 2.5                                   # bounded by the call timeout, not the hung server
        assert [f for _, f in out] == ["error", "error", None, "timeout"]
        assert "TimeoutError" in out[0][0] or "timed out" in out[0][0]
        assert "HTTP 500" in out[1][0] and "T (corpus://d)" in out[2][0]
        assert _Flaky.hits["/limited/retrieve"] == 3        # two 429s, then success
        with pytest.raises(BackendError, match="HTTP 500"):
            RetrieverClient(base + "/fail", retries=1, backoff_s=0.01).search("q")
    finally:
        srv.shutdown()


def test_cli_index_build_and_eval_research(tmp_path):
    from typer.testing import CliRunner

    from llmrl.cli import app

    runner = CliRunner()
    c = tmp_path / "c.jsonl"
    c.write_text(json.dumps({"title": "Rialto", "text": "The Rialto Bridge is in Venice."}) + "\n")
    res = runner.invoke(app, ["index", "build", str(c), "--out", str(tmp_path / "i.sqlite")])
    assert res.exit_code == 0 and json.loads(res.stdout)["passages"] == 1
    assert runner.invoke(app, ["index", "build", str(tmp_path / "missing.jsonl")]).exit_code == 2
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question": "Which bridge is in Venice?", "answer": "Rialto Bridge"}) + "\n")
    res = runner.invoke(app, ["eval", "research", "--model", "tiny://arithmetic", "--data", str(q), "--search", str(c),
                              "--max-new-tokens", "8", "--no-chat"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])[str(q)]
    assert out["n"] == 1 and out["format_fail"] == 1.0 and out["f1"] == 0.0 and "searches_per_question" in out
    res = runner.invoke(app, ["eval", "research", "--model", "tiny://arithmetic", "--data", str(q), "--search", "nope"])
    assert res.exit_code == 2 and "--search" in res.output


class _FakeWeb(BaseHTTPRequestHandler):
    """A serper.dev-shaped search API and two HTML pages, on 127.0.0.1."""
    calls: list[str] = []

    def log_message(self, *a):
        pass

    def _send(self, code, body: bytes, ctype="application/json"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeWeb.calls.append(self.path)
        if self.headers.get("X-API-KEY") != "k123":
            return self._send(403, b"{}")
        port = self.server.server_address[1]
        organic = [{"title": "Rialto Bridge", "link": f"http://127.0.0.1:{port}/rialto", "snippet": "Venice bridge"}]
        self._send(200, json.dumps({"organic": organic * body["num"]}).encode())

    def do_GET(self):
        _FakeWeb.calls.append(self.path)
        if self.path == "/rialto":
            html = ("<html><head><title>Rialto</title><script>var x=1;</script></head><body><nav>Home | About</nav>"
                    "<article><h1>Rialto Bridge</h1><p>The Rialto Bridge is the oldest of the four bridges spanning "
                    "the Grand Canal in Venice, Italy. It was completed in 1591 to a design by Antonio da Ponte, "
                    "replacing a wooden bridge that had collapsed several times.</p></article></body></html>")
            return self._send(200, html.encode(), "text/html")
        self._send(404, b"")


def test_web_backend_against_local_servers(tmp_path, monkeypatch):
    pytest.importorskip("trafilatura")
    from llmrl.research.web import DiskCache, PageFetcher, SerperSearch, WebBackend

    srv = ThreadingHTTPServer(("127.0.0.1", 0), _FakeWeb)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        monkeypatch.delenv("TEST_SERPER_KEY", raising=False)
        with pytest.raises(ValueError, match="TEST_SERPER_KEY"):
            SerperSearch(endpoint=base + "/search", api_key_env="TEST_SERPER_KEY")
        monkeypatch.setenv("TEST_SERPER_KEY", "k123")
        cache = DiskCache(tmp_path / "web.sqlite")
        web = WebBackend(SerperSearch(endpoint=base + "/search", api_key_env="TEST_SERPER_KEY", cache=cache),
                         PageFetcher(cache=cache))
        tools = research_tools(web, k=1)
        ctx = ToolContext()
        assert "Rialto Bridge" in tools["web_search"]({"query": ["rialto"]}, ctx)
        page = tools["browse_webpage"]({"url_list": [base + "/rialto"]}, ctx)
        assert "completed in 1591" in page and "var x" not in page and "Home | About" not in page
        n = len(_FakeWeb.calls)
        web.search("rialto", 1), web.page(base + "/rialto")            # both cached on disk now
        assert len(_FakeWeb.calls) == n
        assert web.page(base + "/missing") is None and web.page("file:///etc/passwd") is None
    finally:
        srv.shutdown()


def test_question_files_are_checked(tmp_path):
    from llmrl.data.multihop import multihop_dataset

    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question": "a?", "answers": ["x", "y"]}) + "\n" + json.dumps({"question": "b?"}) + "\n")
    with pytest.raises(ValueError, match=r"q.jsonl:2: needs a 'question' string and 'answer'"):
        multihop_dataset("test", path=str(q))
    q.write_text(json.dumps({"question": "a?", "answer": "x"}) + "\n")
    assert multihop_dataset("test", path=str(q), instruction=None)[0] == {"prompt": "a?", "question": "a?", "answers": ["x"]}
    assert len(multihop_dataset("test", name="bamboogle")) == 125
