"""The monitor's HTTP server: a fixed map of routes over one home, stdlib ``ThreadingHTTPServer``.

    python3 launch_live_monitor.py [--home DIR] [--host 127.0.0.1] [--port 8080]

GET  /healthz  /api/status  /api/metrics?since_step=N&since_row=R&job_id=ID&max_points=N
     /api/metrics?axis=examples|tokens|steps|time&window=all|job|jobs:N|24h&x_min=&x_max=&max_points=N
     /api/jobs?offset=0&limit=50  /api/lineage?job_id=ID  /api/eval?max_points=1000
     /api/queue?state=done&offset=0&limit=50  /api/history?offset=0&limit=100  /api/system  /api/gpu
     /api/memory  /api/layers  /api/logs?tail=N (text/plain)  /metrics (Prometheus text)
GET  /  /live_monitor_ui_v2.html (the page)  /js/monitor.js  /css/monitor.css
     /layer_activity_monitor.html (layers x module types heatmap)  /js/layers.js  /css/layers.css
     /vendor/uplot/uPlot.iife.min.js  /vendor/uplot/uPlot.min.css  /vendor/uplot/LICENSE
POST /api/control/pause|resume|skip   header X-Trainingd-Token: <control/monitor_token>

Only these paths exist: the page's files are a fixed map of names inside the package's ``static/`` folder,
nothing is looked up from the request's path, so ``..``, ``%2e%2e``, absolute paths and symlinks cannot reach a
file. The page cannot read ``control/monitor_token``: the server writes the token into the HTML it serves
(``<meta name="trainingd-token">``); only a request with an allowed ``Host`` gets it, so a rebinding site cannot.
A request whose ``Host`` is not this machine's loopback name (or the configured host) is refused with 403 (DNS
rebinding); see ``security``.
"""

from __future__ import annotations

import html
import json
import logging
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from trainingd import __version__
from trainingd.contracts.layer_activity import read_layer_activity
from trainingd.contracts.layer_activity import summary as layer_summary
from trainingd.cli.controller import send_request
from trainingd.instance import is_daemon_running
from trainingd.jobqueue import QueueError
from trainingd.paths import Home
from trainingd.monitor import security, system, views
from trainingd.monitor.history_index import HistoryIndex
from trainingd.monitor.metrics_log import MetricsLog

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
CONTROL_ACTIONS = ("pause", "resume", "skip")
MAX_POINTS = 20_000
STATIC = Path(__file__).resolve().parent / "static"
PAGE = "live_monitor_ui_v2.html"
LAYERS_PAGE = "layer_activity_monitor.html"
TOKEN_META = '<meta name="trainingd-token" content="">'
# URL -> (file under STATIC, content type). The only files the server ever reads for a request.
ASSETS: dict[str, tuple[str, str]] = {
    "/": (PAGE, "text/html; charset=utf-8"),
    f"/{PAGE}": (PAGE, "text/html; charset=utf-8"),
    f"/{LAYERS_PAGE}": (LAYERS_PAGE, "text/html; charset=utf-8"),
    "/js/monitor.js": ("js/monitor.js", "text/javascript; charset=utf-8"),
    "/js/layers.js": ("js/layers.js", "text/javascript; charset=utf-8"),
    "/css/monitor.css": ("css/monitor.css", "text/css; charset=utf-8"),
    "/css/layers.css": ("css/layers.css", "text/css; charset=utf-8"),
    "/vendor/uplot/uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/vendor/uplot/uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css; charset=utf-8"),
    "/vendor/uplot/LICENSE": ("vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
}
# The page loads only its own files and talks only to this server.
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class BadRequest(Exception):
    """A query parameter that cannot be used; answered with 400 and the message."""


class NotFound(Exception):
    """A well-formed request for something the home does not have; answered with 404 and the message."""


def _float(query: dict[str, list[str]], name: str) -> float | None:
    values = query.get(name)
    if not values or values[-1] == "":
        return None
    try:
        v = float(values[-1])
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {values[-1]!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise BadRequest(f"{name} must be a finite number")
    return v


def _int(query: dict[str, list[str]], name: str, default: int | None, low: int = 0,
         high: int | None = None) -> int | None:
    values = query.get(name)
    if not values or values[-1] == "":
        return default
    try:
        n = int(values[-1])
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {values[-1]!r}") from None
    if n < low:
        raise BadRequest(f"{name} must be >= {low}")
    return min(n, high) if high is not None else n


class Monitor:
    """The state shared by all requests of one server: the home, the token, the cached readers."""

    def __init__(self, home: Home, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
        self.home = home
        self.host = host
        self.port = port
        self.token = security.ensure_token(home.monitor_token)
        self.metrics = MetricsLog(home.metrics)
        self.history = HistoryIndex(home)
        self.snapshots = views.SnapshotIndex(home)
        self.layer_history = views.LayerHistoryCache(home)
        self.started = time.time()

    def running(self) -> bool:
        return is_daemon_running(self.home)

    # each view takes the parsed query and returns a dict (JSON) or a str (text)
    def healthz(self, q: dict) -> Any:
        return {"ok": True, "version": __version__, "home": str(self.home.root), "daemon_running": self.running(),
                "uptime_s": round(time.time() - self.started, 3)}

    def status(self, q: dict) -> Any:
        return views.status_view(self.home)

    def metrics_api(self, q: dict) -> Any:
        if "axis" in q or "window" in q:  # the adapter's life on one axis (the page's charts)
            try:
                return {"daemon_running": self.running(),
                        **self.metrics.query_life(axis=q.get("axis", ["examples"])[-1],
                                                  window=q.get("window", ["all"])[-1],
                                                  x_min=_float(q, "x_min"), x_max=_float(q, "x_max"),
                                                  max_points=_int(q, "max_points", 2000, 1, MAX_POINTS))}
            except ValueError as e:
                raise BadRequest(str(e)) from None
        job = q.get("job_id", [None])[-1] or None
        return {"daemon_running": self.running(),
                **self.metrics.query(since_step=_int(q, "since_step", None, low=-1),
                                     since_row=_int(q, "since_row", None),
                                     job_id=job, max_points=_int(q, "max_points", 2000, 1, MAX_POINTS))}

    def queue(self, q: dict) -> Any:
        state = q.get("state", [None])[-1] or None
        try:
            return views.queue_view(self.home, state, _int(q, "offset", 0), _int(q, "limit", 50, 0, views.MAX_PAGE))
        except QueueError as e:
            raise BadRequest(str(e)) from None

    def history_api(self, q: dict) -> Any:
        return {"daemon_running": self.running(),
                **views.history_view(self.history, _int(q, "offset", 0), _int(q, "limit", 100, 0, views.MAX_PAGE))}

    def jobs_api(self, q: dict) -> Any:
        """The jobs table, newest first: data counts, steps, loss, held-out scores, gate decision, snapshot."""
        return {"daemon_running": self.running(),
                **views.jobs_view(self.history, self.snapshots, _int(q, "offset", 0),
                                  _int(q, "limit", 50, 0, views.MAX_PAGE))}

    def lineage_api(self, q: dict) -> Any:
        job = q.get("job_id", [""])[-1]
        if not job:
            raise BadRequest("job_id is required")
        doc = views.lineage_view(self.home, self.history, job)
        if doc is None:
            raise NotFound(f"no finished job {job!r} in this home")
        return doc

    def eval_api(self, q: dict) -> Any:
        """Held-out evaluations, oldest first: accuracy against examples trained (the monitor's eval chart), at
        most ``max_points`` (1000) evenly spread over them all."""
        max_points = _int(q, "max_points", views.MAX_EVAL_POINTS, 1, 10_000)
        return {"daemon_running": self.running(), **views.eval_view(self.history, max_points)}

    def system_api(self, q: dict) -> Any:
        return {"daemon_running": self.running(), **system.system(self.home)}

    def gpu(self, q: dict) -> Any:
        return {"daemon_running": self.running(), "gpus": system.gpus()}

    def memory(self, q: dict) -> Any:
        return {"daemon_running": self.running(), **system.memory(), "processes": system.processes(self.home)}

    def layers(self, q: dict) -> Any:
        """The trainer's latest per-LoRA-module report (``status/layer_activity.json``) and its top changers."""
        doc = read_layer_activity(self.home)
        return {"daemon_running": self.running(), "activity": doc,
                "summary": layer_summary(doc) if doc is not None else None, "history": self.layer_history.view()}

    def logs(self, q: dict) -> str:
        return views.logs_text(self.home, _int(q, "tail", 200, 0, views.MAX_LOG_LINES))

    def prometheus(self, q: dict) -> str:
        return views.prometheus_text(self.home, self.metrics)

    def routes(self) -> dict[str, tuple[Callable[[dict], Any], str]]:
        json_type = "application/json"
        return {
            "/healthz": (self.healthz, json_type),
            "/api/status": (self.status, json_type),
            "/api/metrics": (self.metrics_api, json_type),
            "/api/queue": (self.queue, json_type),
            "/api/history": (self.history_api, json_type),
            "/api/jobs": (self.jobs_api, json_type),
            "/api/lineage": (self.lineage_api, json_type),
            "/api/eval": (self.eval_api, json_type),
            "/api/system": (self.system_api, json_type),
            "/api/gpu": (self.gpu, json_type),
            "/api/memory": (self.memory, json_type),
            "/api/layers": (self.layers, json_type),
            "/api/logs": (self.logs, "text/plain; charset=utf-8"),
            "/metrics": (self.prometheus, "text/plain; version=0.0.4; charset=utf-8"),
        }

    def asset(self, path: str) -> tuple[bytes, str]:
        """The bytes of a fixed asset; the page gets the control token written into its meta tag."""
        name, content_type = ASSETS[path]
        body = (STATIC / name).read_bytes()
        if name == PAGE:
            meta = f'<meta name="trainingd-token" content="{html.escape(self.token, quote=True)}">'
            body = body.replace(TOKEN_META.encode(), meta.encode(), 1)
        return body, content_type

    def control(self, action: str) -> tuple[int, dict]:
        result = send_request(self.home, action)  # the controller's own handler: the same request file
        return (HTTPStatus.OK if result["ok"] else HTTPStatus.CONFLICT), result


class MonitorHandler(BaseHTTPRequestHandler):
    """One request to the monitor: a fixed route, an asset or a control POST. ``make_handler`` binds it to a
    ``Monitor`` (http.server makes one handler per request from a class, so the monitor rides on the class)."""

    server_version = f"trainingd-monitor/{__version__}"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    monitor: Monitor
    routes: dict[str, tuple[Callable[[dict], Any], str]]
    control_paths: dict[str, str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, doc: Any) -> None:
        self._send(code, json.dumps(doc, allow_nan=False).encode(), "application/json")

    def _error(self, code: int, message: str) -> None:
        self._json(code, {"error": message, "code": int(code)})

    def _host_ok(self) -> bool:
        if security.allowed_host(self.headers.get("Host"), self.monitor.host, self.monitor.port):
            return True
        self._error(HTTPStatus.FORBIDDEN, "Host not allowed")
        return False

    def _route(self) -> tuple[str, dict] | None:
        # The raw path is matched as is: no unquoting, no normalisation, so only exact routes exist.
        if not self.path.startswith("/"):
            return None
        parts = urlsplit(self.path)
        return parts.path, parse_qs(parts.query, keep_blank_values=True)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if not self._host_ok():
            return
        route = self._route()
        if route is not None and route[0] in ASSETS:
            return self._send_asset(route[0])
        if route is None or route[0] not in self.routes:
            if route is not None and route[0] in self.control_paths:
                return self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST")
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        self._send_view(*route)

    do_HEAD = do_GET

    def _send_asset(self, path: str) -> None:
        try:
            body, content_type = self.monitor.asset(path)
        except OSError:
            log.exception("%s is missing from the package", path)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "asset missing (see the monitor's log)")
        extra = {"Referrer-Policy": "no-referrer"}
        if content_type.startswith("text/html"):
            extra.update({"Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"})
        self._send(HTTPStatus.OK, body, content_type, extra)

    def _send_view(self, path: str, query: dict) -> None:
        view, content_type = self.routes[path]
        try:
            body = view(query)
        except BadRequest as e:
            return self._error(HTTPStatus.BAD_REQUEST, str(e))
        except NotFound as e:
            return self._error(HTTPStatus.NOT_FOUND, str(e))
        except Exception:  # a view must never take the server down; the log says why
            log.exception("%s failed", path)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the monitor's log)")
        if isinstance(body, str):
            self._send(HTTPStatus.OK, body.encode("utf-8"), content_type)
        else:
            self._json(HTTPStatus.OK, body)

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        if not self._host_ok():
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 16))  # the body carries nothing; drain it for keep-alive
        route = self._route()
        if route is None or route[0] not in self.control_paths:
            if route is not None and (route[0] in self.routes or route[0] in ASSETS):
                return self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use GET")
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        if not security.same_origin(self.headers.get("Origin"), self.headers.get("Host")):
            return self._error(HTTPStatus.FORBIDDEN, "foreign Origin")
        if not security.token_matches(self.headers.get(security.TOKEN_HEADER), self.monitor.token):
            return self._error(HTTPStatus.FORBIDDEN, f"missing or wrong {security.TOKEN_HEADER}")
        code, result = self.monitor.control(self.control_paths[route[0]])
        self._json(code, result)


def make_handler(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    """``MonitorHandler`` bound to ``monitor``; its routes are read once, here."""
    return type("Handler", (MonitorHandler,), {"monitor": monitor, "routes": monitor.routes(),
                                               "control_paths": {f"/api/control/{a}": a for a in CONTROL_ACTIONS}})


class MonitorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that closes early (a browser tab, curl | head) is routine: one debug line, no traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("client %s went away: %s", client_address, exc)
            return
        log.exception("request from %s failed", client_address)


def create_server(home: Home, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> MonitorServer:
    """A bound server (``port=0`` picks a free port: ``server.server_address[1]``); call ``serve_forever``."""
    home.root.mkdir(parents=True, exist_ok=True)
    monitor = Monitor(home, host, port)
    server_class = MonitorServer
    if ":" in host:  # an IPv6 address such as ::1
        server_class = type("MonitorServer6", (MonitorServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), make_handler(monitor))
    monitor.port = server.server_address[1]
    server.monitor = monitor  # type: ignore[attr-defined]
    # A metrics log of a long run takes seconds to read the first time: do it now, not in the first request.
    threading.Thread(target=monitor.metrics.refresh, name="metrics-warm-up", daemon=True).start()
    return server


def serve_in_thread(home: Home, host: str = DEFAULT_HOST, port: int = 0) -> tuple[MonitorServer, threading.Thread]:
    """For embedding and tests: the server runs in a daemon thread; ``server.shutdown()`` stops it."""
    server = create_server(home, host, port)
    thread = threading.Thread(target=server.serve_forever, name="trainingd-monitor", daemon=True)
    thread.start()
    return server, thread
