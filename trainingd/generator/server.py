"""The reference generator service: SYLLO puzzles over HTTP, stdlib only.

    trainingd generator [--host 127.0.0.1] [--port 8091]

Endpoints (all GET):
    /generate?count=N&seed=S&level=L   N training puzzles as chat JSONL (``{"messages": [user, assistant]}``)
        [&review=R&review_from=F]      a share R (0..0.9) of them from levels F..L-1 (review of earlier levels)
    /eval?count=N&seed=S&level=L       N held-out puzzles with their answers (``messages`` + ``syllo``); built
                                       from held-out words in a separate seed space, so never a training puzzle
    /healthz                           ``{"ok": true, ...}``

Bodies are streamed with chunked transfer encoding, so a client can tell a complete body (it ends with the
zero-length chunk) from one cut half-way; the response headers also carry ``X-Syllo-Count``, ``X-Syllo-Seed``
and ``X-Syllo-Level`` for the client to check what it got.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from trainingd.generator.puzzles import LEVELS, MAX_LEVEL, MIN_LEVEL, generate

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8091
MAX_COUNT = 1_000_000
CHUNK_LINES = 256  # puzzles per chunk written: few syscalls, and memory stays flat at any count


class BadRequest(ValueError):
    pass


def _number_arg(q: dict, name: str, default: float, lo: float, hi: float, kind: type = int):
    """The query argument ``name`` as ``kind`` (int or float) in [lo, hi]; BadRequest says what is wrong."""
    raw = q.get(name, [str(default)])[-1]
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if not lo <= value <= hi:  # NaN fails this too
        raise BadRequest(f"{name} must be in [{lo}, {hi}], got {raw}")
    return value


def _int_arg(q: dict, name: str, default: int, lo: int, hi: int) -> int:
    return _number_arg(q, name, default, lo, hi, int)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "trainingd-generator"

    def log_message(self, fmt: str, *args) -> None:  # noqa: D401 - http.server's hook
        log.info("%s %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        try:
            if url.path == "/healthz":
                self._json(200, {"ok": True, "service": "syllo", "levels": sorted(LEVELS)})
            elif url.path in ("/generate", "/eval"):
                count = _int_arg(q, "count", 100, 1, MAX_COUNT)
                seed = _int_arg(q, "seed", 0, 0, 2**62)
                level = _int_arg(q, "level", 1, MIN_LEVEL, MAX_LEVEL)
                review = _number_arg(q, "review", 0.0, 0.0, 0.9, float) if url.path == "/generate" else 0.0
                review_from = _int_arg(q, "review_from", MIN_LEVEL, MIN_LEVEL, MAX_LEVEL)
                self._stream(count, seed, level, held_out=url.path == "/eval", review=review,
                             review_from=review_from)
            else:
                self._json(404, {"ok": False, "error": f"no such endpoint {url.path}; try /generate, /eval, /healthz"})
        except BadRequest as e:
            self._json(400, {"ok": False, "error": str(e)})
        except (BrokenPipeError, ConnectionResetError):
            log.info("client went away during %s", url.path)

    def _json(self, code: int, doc: dict) -> None:
        body = (json.dumps(doc) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, count: int, seed: int, level: int, *, held_out: bool, review: float = 0.0,
                review_from: int = MIN_LEVEL) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Syllo-Count", str(count))
        self.send_header("X-Syllo-Seed", str(seed))
        self.send_header("X-Syllo-Level", str(level))
        self.send_header("X-Syllo-Review", str(review))
        self.end_headers()
        lines: list[str] = []
        for puzzle in generate(count, seed, level, held_out=held_out, review=review, review_from=review_from):
            lines.append(json.dumps(puzzle.record(with_answer_fields=held_out)))
            if len(lines) >= CHUNK_LINES:
                self._chunk(lines)
                lines = []
        if lines:
            self._chunk(lines)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


def make_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """A bound server (``port`` 0 picks a free one: ``server.server_address[1]``); call ``serve_forever()``."""
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve_in_thread(host: str = DEFAULT_HOST, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start a server on a background thread (for tests and the learning-curve bench); returns it and its URL."""
    server = make_server(host, port)
    threading.Thread(target=server.serve_forever, name="syllo-generator", daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"
