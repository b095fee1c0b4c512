"""``llmrl search serve``: the local index over HTTP, with Search-R1's retrieval API so Search-R1
(and verl's search tool) can point at it, plus ``POST /page`` for browsing.

    POST /retrieve {"queries": [str], "topk": int, "return_scores": bool}
      -> {"result": [[{"document": {"id", "contents"}, "score"}, ...] per query]}
         (without scores: [[{"id", "contents"}, ...]]); contents = '"title"\\ntext' as Search-R1's
         wiki corpus has it.
    POST /page {"url": str} -> {"url", "text"} or 404

The server faces policy-written queries, so it bounds what it accepts: request bodies over
``max_body_bytes`` get 413, non-JSON or wrongly typed bodies 400, ``topk`` and the number of
queries are capped; a bad request never takes the server down (one thread per request)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from llmrl.research.index import SearchIndex


class _BadRequest(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def make_server(index: SearchIndex, host: str = "127.0.0.1", port: int = 8000, *, max_body_bytes: int = 1 << 20,
                max_queries: int = 256, max_topk: int = 100) -> ThreadingHTTPServer:
    """A ready (not yet serving) HTTP server; ``serve_forever()`` it, or ``serve_in_thread``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: one line per request would flood training logs
            pass

        def _reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict:
            try:
                n = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise _BadRequest(411, "Content-Length required") from None
            if n < 0 or n > max_body_bytes:
                self.close_connection = True   # the unread body must not be parsed as the next request
                raise _BadRequest(413, f"body over {max_body_bytes} bytes")
            try:
                body = json.loads(self.rfile.read(n) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise _BadRequest(400, "body is not JSON") from None
            if not isinstance(body, dict):
                raise _BadRequest(400, "body must be a JSON object")
            return body

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, {"status": "ok", "passages": index.size})
            else:
                self._reply(404, {"error": f"no such path {self.path}; POST /retrieve or /page"})

        def do_POST(self) -> None:
            try:
                body = self._body()
                if self.path == "/retrieve":
                    self._reply(200, retrieve(body))
                elif self.path == "/page":
                    url = body.get("url")
                    if not isinstance(url, str):
                        raise _BadRequest(400, "url must be a string")
                    text = index.page(url)
                    self._reply(200, {"url": url, "text": text}) if text is not None else \
                        self._reply(404, {"error": f"no page {url}"})
                else:
                    raise _BadRequest(404, f"no such path {self.path}")
            except _BadRequest as exc:
                self._reply(exc.code, {"error": str(exc)})
            except Exception as exc:   # noqa: BLE001 - a failed search is a 500 reply, not a dead server
                self._reply(500, {"error": f"{type(exc).__name__}: {exc}"})

    def retrieve(body: dict) -> dict:
        queries, topk = body.get("queries"), body.get("topk", 3)
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise _BadRequest(400, "queries must be a list of strings")
        if len(queries) > max_queries:
            raise _BadRequest(413, f"at most {max_queries} queries per request")
        if not isinstance(topk, int) or isinstance(topk, bool) or not 0 < topk <= max_topk:
            raise _BadRequest(400, f"topk must be an integer in 1..{max_topk}")
        out = []
        for q in queries:
            docs = [({"id": h.id, "contents": f'"{h.title}"\n{index.passage(h.url)[1]}',
                      "url": h.url}, h.score) for h in index.search(q, topk)]
            out.append([{"document": d, "score": s} for d, s in docs] if body.get("return_scores") else [d for d, _ in docs])
        return {"result": out}

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Serve from a daemon thread (tests, or an agent loop in the same process)."""
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="llmrl-search-server")
    thread.start()
    return thread
