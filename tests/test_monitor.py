"""The monitor server: every endpoint over real HTTP, on an empty home and after a real training; its refusals.

    ./run_tests.sh tests/test_monitor.py -q
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, chat_lines, wait_for, write_config, write_jsonl
from trainingd.contracts.job import write_job
from trainingd.contracts.status import read_status
from trainingd.monitor.metrics_log import MetricsLog, downsample
from trainingd.monitor.server import serve_in_thread
from trainingd.paths import Home

log = logging.getLogger(__name__)

JSON_ENDPOINTS = ["/healthz", "/api/status", "/api/metrics", "/api/queue", "/api/history", "/api/jobs", "/api/system",
                  "/api/gpu", "/api/memory", "/api/layers", "/api/eval"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


class Client:
    """Real HTTP to a running monitor: ``get``/``post`` return (status, headers, body bytes)."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        # http.client sends the path byte for byte (urllib would not let "/../x" through unchanged).
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host="Host" in (headers or {}))
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.endheaders()
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        return self.request("GET", path, headers)

    def json(self, path: str) -> dict:
        code, headers, body = self.get(path)
        assert code == 200, (path, code, body)
        assert headers["Content-Type"] == "application/json"
        return json.loads(body)

    def post(self, path: str, headers: dict | None = None) -> tuple[int, dict]:
        code, _, body = self.request("POST", path, headers)
        return code, json.loads(body)


@pytest.fixture
def serve():
    """Start monitors in threads on ephemeral ports; shut them all down after the test."""
    servers = []

    def start(home: Path) -> Client:
        server, _ = serve_in_thread(Home.at(home), "127.0.0.1", 0)
        servers.append(server)
        return Client(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def check_prometheus(text: str) -> dict[str, float]:
    """Every line is a comment or ``name{labels} value``; returns the unlabelled samples."""
    sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*(\\.[^"\\]*)*",?)*\})? (\S+)$')
    values = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = sample.match(line)
        assert m, f"not Prometheus text: {line!r}"
        float(m.group(5))
        if not m.group(2):
            values[m.group(1)] = float(m.group(5))
    return values


# --- an empty home -----------------------------------------------------------------------------------

def test_every_endpoint_answers_on_an_empty_home_with_no_daemon(tmp_path, serve):
    home = tmp_path / "empty"
    client = serve(home)
    for path in JSON_ENDPOINTS:
        assert client.json(path)["daemon_running"] is False, path
    assert client.json("/api/status")["status"] is None
    assert client.json("/api/metrics")["points"] == []
    layers = client.json("/api/layers")
    assert {k: layers[k] for k in ("daemon_running", "activity", "summary")} == {
        "daemon_running": False, "activity": None, "summary": None}
    assert layers["history"]["reports"] == 0 and layers["history"]["per_job"]["jobs"] == []
    queue = client.json("/api/queue")
    assert queue["counts"]["done"] == 0 and queue["states"]["failed"]["jobs"] == []
    assert client.json("/api/history") == {"daemon_running": False, "total": 0, "offset": 0, "limit": 100, "jobs": []}
    assert client.json("/api/eval") == {"daemon_running": False, "total": 0, "evals": []}
    system = client.json("/api/system")
    assert system["processes"]["daemon"] == {"pid": None, "rss_bytes": None}
    assert system["memory"]["total_bytes"] > 0 and system["disk"]["total_bytes"] > 0
    assert isinstance(system["gpus"], list)  # [] here: no NVML; a GPU box lists its cards
    code, headers, body = client.get("/api/logs?tail=10")
    assert code == 200 and headers["Content-Type"].startswith("text/plain") and body == b""
    code, headers, body = client.get("/metrics")
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert check_prometheus(body.decode())["trainingd_daemon_running"] == 0


def test_the_page_and_its_assets_are_served_with_the_token_only_under_a_local_host(tmp_path, serve):
    home = tmp_path / "h"
    client = serve(home)
    token = Home.at(home).monitor_token.read_text().strip()
    for path in ["/", "/live_monitor_ui_v2.html"]:
        code, headers, body = client.get(path)
        assert code == 200 and headers["Content-Type"].startswith("text/html")
        assert f'<meta name="trainingd-token" content="{token}">'.encode() in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert b"http://" not in body and b"https://" not in body  # nothing from outside
    # the layer page has no controls, so no token; the same CSP
    code, headers, body = client.get("/layer_activity_monitor.html")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in headers["Content-Security-Policy"] and b"/js/layers.js" in body
    assert token.encode() not in body and b"http://" not in body and b"https://" not in body
    for path, kind in [("/js/monitor.js", "text/javascript"), ("/css/monitor.css", "text/css"),
                       ("/js/layers.js", "text/javascript"), ("/css/layers.css", "text/css"),
                       ("/vendor/uplot/uPlot.iife.min.js", "text/javascript"),
                       ("/vendor/uplot/uPlot.min.css", "text/css"), ("/vendor/uplot/LICENSE", "text/plain")]:
        code, headers, body = client.get(path)
        assert code == 200 and headers["Content-Type"].startswith(kind) and body, path
        assert token.encode() not in body
    assert b"MIT" in client.get("/vendor/uplot/LICENSE")[2]
    code, _, body = client.get("/", {"Host": "evil.example"})
    assert code == 403 and token.encode() not in body
    assert client.request("POST", "/")[0] == 405
    for path in ["/vendor/uplot/", "/vendor/uplot/uPlot.js", "/static/js/monitor.js", "/js/../js/monitor.js",
                 "/live_monitor_ui_v2.html/", "/%6as/monitor.js"]:
        assert client.get(path)[0] == 404, path


def test_every_served_asset_is_in_the_package_data():
    from pathlib import PurePosixPath

    from trainingd.monitor.server import ASSETS, STATIC

    # tomllib is 3.11+; the project supports 3.10, and this one line is all the test needs
    line = re.search(r'^"trainingd\.monitor" = (\[.*\])$', (REPO / "pyproject.toml").read_text(), re.M)
    assert line, "pyproject.toml has no package-data for trainingd.monitor"
    globs = json.loads(line.group(1))
    for name, _ in ASSETS.values():
        assert (STATIC / name).is_file(), name
        assert any(PurePosixPath(f"static/{name}").match(g) for g in globs), name


def test_bad_query_parameters_are_a_400_not_a_crash(tmp_path, serve):
    client = serve(tmp_path / "h")
    assert client.get("/api/metrics?since_step=abc")[0] == 400
    assert client.get("/api/queue?state=lost")[0] == 400
    assert client.get("/api/queue?limit=-1")[0] == 400
    assert client.json("/healthz")["ok"] is True


# --- security ----------------------------------------------------------------------------------------

def test_a_foreign_host_header_is_refused(tmp_path, serve):
    client = serve(tmp_path / "h")
    port = client.port
    for host in ["evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}", f"localhost:{port + 1}",
                 "", "0.0.0.0"]:
        code, _, body = client.get("/api/status", {"Host": host})
        assert code == 403, (host, body)
        assert b"home" not in body
    for host in [f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "localhost", f"LOCALHOST:{port}"]:
        assert client.get("/api/status", {"Host": host})[0] == 200, host


def test_only_the_fixed_routes_exist(tmp_path, serve):
    home = tmp_path / "h"
    client = serve(home)
    (home / "config.json").write_text('{"secret": 1}')
    for path in ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/api/../config.json", "/config.json",
                 "/etc/passwd", "//etc/passwd", "/api/status/../../config.json", "/control/monitor_token",
                 "/status/metrics.jsonl", "/api/%2e%2e/config.json", "/api/logs/../../config.json", "/js/",
                 "/css/../config.json", "/.daemon.pid"]:
        code, _, body = client.get(path)
        assert code == 404, (path, code)
        assert b"secret" not in body and b"root:" not in body
    code, _, _ = client.request("GET", "http://evil.example/api/status")  # absolute-form request target
    assert code in (403, 404)
    assert client.get("/api/control/pause")[0] == 405
    assert client.request("POST", "/api/status")[0] == 405


def test_control_needs_the_token_and_a_same_origin(tmp_path, serve):
    home = tmp_path / "h"
    client = serve(home)
    token_file = Home.at(home).monitor_token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    origin = f"http://127.0.0.1:{client.port}"
    assert client.post("/api/control/pause")[0] == 403
    assert client.post("/api/control/pause", {"X-Trainingd-Token": "wrong"})[0] == 403
    assert client.post("/api/control/pause", {"X-Trainingd-Token": token, "Origin": "http://evil.example"})[0] == 403
    assert client.post("/api/control/pause", {"X-Trainingd-Token": token, "Origin": "null"})[0] == 403
    assert client.post("/api/control/stop", {"X-Trainingd-Token": token})[0] == 404  # only pause, resume, skip
    # with the token and the same origin it reaches the controller, which refuses: no daemon runs here
    code, doc = client.post("/api/control/pause", {"X-Trainingd-Token": token, "Origin": origin,
                                                   "Host": f"127.0.0.1:{client.port}"})
    assert code == 409 and doc["ok"] is False and "no daemon running" in doc["message"]
    assert not list(Home.at(home).root.joinpath("control").glob("requests/*.json"))


def test_a_restarted_monitor_keeps_the_token_and_tightens_a_loose_mode(tmp_path, serve):
    home = tmp_path / "h"
    serve(home)
    token_file = Home.at(home).monitor_token
    token = token_file.read_text()
    os.chmod(token_file, 0o644)
    serve(home)
    assert token_file.read_text() == token
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600


# --- the metrics log reader --------------------------------------------------------------------------

def test_metrics_are_read_incrementally_and_a_torn_line_waits(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"job_id": "000001-a", "step": s, "loss": 1.0 / s}) + "\n"
                            for s in range(1, 101)))
    m = MetricsLog(path)
    assert m.refresh() == 100
    offset = m.offset
    with open(path, "a") as f:
        f.write(json.dumps({"job_id": "000001-a", "step": 101, "loss": 0.5}) + "\n" + '{"job_id": "000001-a", "st')
    assert m.refresh() == 1 and m.offset > offset
    with open(path, "a") as f:
        f.write('ep": 102, "loss": 0.25, "eval_loss": null}\n')
    assert m.refresh() == 1
    doc = m.query(since_step=99)
    assert [p["step"] for p in doc["points"]] == [100, 101, 102]
    assert doc["points"][-1]["loss"] == 0.25 and doc["points"][-1]["eval_loss"] is None
    assert m.query(since_row=doc["next_row"])["points"] == []
    few = m.query(max_points=10)
    assert few["returned"] == 10 and few["downsampled"] and few["points"][-1]["step"] == 102
    path.write_text(json.dumps({"job_id": "000002-b", "step": 1, "loss": 2.0}) + "\n")  # replaced: read afresh
    assert [p["job_id"] for p in m.query()["points"]] == ["000002-b"]
    assert downsample(list(range(1000)), 3) == [0, 500, 999]


# --- a home where a real training ran --------------------------------------------------------------

@pytest.mark.slow
def test_every_endpoint_shows_a_real_training(home, serve):
    write_config(home, eval_fraction=0.25, eval_steps=2)
    write_jsonl(home / "inbox" / "chat.jsonl", chat_lines(12))
    (home / "inbox" / "broken.jsonl").write_text("{not json\n")
    res = subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home), "--once"],
                         capture_output=True, text=True, timeout=600, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    client = serve(home)

    status = client.json("/api/status")
    assert status["daemon_running"] is False and status["status"]["status"] == "stopped"
    assert status["stale"] is False

    metrics = client.json("/api/metrics")
    steps = [p["step"] for p in metrics["points"] if p["loss"] is not None]
    assert steps and steps == sorted(steps) and all(p["job_id"].endswith("-chat") for p in metrics["points"])
    assert any(p["eval_loss"] is not None for p in metrics["points"])
    later = client.json(f"/api/metrics?since_step={steps[0]}")
    assert all(p["step"] > steps[0] for p in later["points"]) and later["returned"] < metrics["returned"]
    assert client.json("/api/metrics?max_points=1")["returned"] <= 1 + sum(
        p["eval_loss"] is not None for p in metrics["points"])

    queue = client.json("/api/queue")
    assert queue["counts"]["done"] == 1 and queue["counts"]["failed"] == 1
    failed = client.json("/api/queue?state=failed")["states"]["failed"]["jobs"]
    assert failed[0]["file"] == "broken.jsonl" and failed[0]["reason"]
    assert client.json("/api/queue?state=done")["states"]["done"]["jobs"][0]["file"] == "chat.jsonl"

    history = client.json("/api/history")
    chat = next(j for j in history["jobs"] if j["file"] == "chat.jsonl")
    assert chat["steps"] >= 1 and chat["loss"] > 0 and chat["eval_loss"] > 0 and chat["seconds"] > 0

    code, _, body = client.get("/api/logs?tail=5")
    lines = body.decode().splitlines()
    assert code == 200 and 1 <= len(lines) <= 5
    assert client.get("/api/logs?tail=100000")[0] == 200  # capped, not refused

    layers = client.json("/api/layers")
    names = [m["name"] for m in layers["activity"]["modules"]]
    assert len(names) == 14 and all(m["update_norm"] > 0 for m in layers["activity"]["modules"])  # 2 layers x 7
    assert layers["summary"]["modules"] == 14 and layers["summary"]["top"][0]["name"] in names

    prom = check_prometheus(client.get("/metrics")[2].decode())
    assert prom["trainingd_jobs_done_total"] == 1 and prom["trainingd_jobs_failed_total"] == 1
    assert prom["trainingd_loss"] > 0

    for path in JSON_ENDPOINTS:
        client.json(path)


@pytest.mark.slow
def test_pause_and_resume_through_the_monitor_reach_a_live_daemon(home, serve):
    daemon = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        client = serve(home)
        wait_for(lambda: client.json("/api/status")["daemon_running"], "the daemon to start")
        system = client.json("/api/system")
        assert system["processes"]["daemon"]["pid"] == daemon.pid
        assert system["processes"]["daemon"]["rss_bytes"] > 0
        token = Home.at(home).monitor_token.read_text().strip()
        headers = {"X-Trainingd-Token": token, "Origin": f"http://127.0.0.1:{client.port}",
                   "Host": f"127.0.0.1:{client.port}"}
        code, doc = client.post("/api/control/pause", headers)
        assert code == 200 and doc["ok"] and doc["id"]
        wait_for(lambda: (read_status(home) or {}).get("status") == "paused", "the daemon to pause")
        assert client.json("/api/status")["status"]["control"]["paused"] is True
        assert client.post("/api/control/resume", headers)[0] == 200
        wait_for(lambda: (read_status(home) or {}).get("status") == "idle", "the daemon to resume")
    finally:
        subprocess.run([sys.executable, str(REPO / "training_controller.py"), "--home", str(home), "stop", "--wait",
                        "--timeout", "60"], env=ENV, capture_output=True, timeout=90)
        daemon.wait(timeout=60)


# --- a home that has run for weeks ---------------------------------------------------------------

def test_status_throughput_and_a_queue_of_10000_done_jobs_stays_paginated(tmp_path, serve):
    home = Home.at(tmp_path / "weeks")
    home.done.mkdir(parents=True)
    for n in range(1, 10_001):
        job_dir = home.done / f"{n:06d}-chat"
        job_dir.mkdir()
        write_job(job_dir, {"id": job_dir.name, "file": "chat.jsonl", "state": "done", "priority": "normal"})
    client = serve(home.root)

    start = time.perf_counter()
    for _ in range(1000):
        code, _, _ = client.get("/api/status")
        assert code == 200
    rate = 1000 / (time.perf_counter() - start)
    log.warning("monitor: /api/status %.0f requests/s (1,000 requests, 10,000 done jobs)", rate)
    print(f"\nmonitor: /api/status {rate:.0f} requests/s")

    start = time.perf_counter()
    for _ in range(20):
        page = client.json("/api/queue?state=done&offset=100&limit=20")
    rate = 20 / (time.perf_counter() - start)
    log.warning("monitor: /api/queue?state=done&limit=20 %.1f requests/s over 10,000 done jobs", rate)
    print(f"monitor: /api/queue?state=done&limit=20 {rate:.1f} requests/s over 10,000 done jobs")
    done = page["states"]["done"]
    assert page["counts"]["done"] == 10_000 and done["total"] == 10_000
    assert [j["id"] for j in done["jobs"]] == [f"{n:06d}-chat" for n in range(9900, 9880, -1)]  # newest first
    assert len(client.json("/api/queue")["states"]["done"]["jobs"]) == 50
    assert len(client.json("/api/queue?state=done&limit=100000")["states"]["done"]["jobs"]) == 500  # capped


def test_launch_live_monitor_serves_in_its_own_process(tmp_path):
    proc = subprocess.Popen([sys.executable, str(REPO / "launch_live_monitor.py"), "--home", str(tmp_path / "h"),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    try:
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line
        with urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/healthz", timeout=30) as resp:
            assert json.loads(resp.read())["ok"] is True
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/nothing", timeout=30)
        assert e.value.code == 404
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    res = subprocess.run([sys.executable, "-m", "trainingd", "monitor", "--help"], capture_output=True, text=True,
                         env=ENV, timeout=60)
    assert res.returncode == 0 and "--port" in res.stdout and "127.0.0.1" in res.stdout


# --- NVML: no GPU here, so its errors are played by a stand-in module (the one fake these tests use) ----

class NVMLError(Exception):
    pass


def fake_nvml(init_fails: bool = False):
    from types import SimpleNamespace

    def fail(*_):
        raise NVMLError("Not Supported")

    def init():
        if init_fails:
            raise NVMLError("Driver Not Loaded")

    return SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, nvmlInit=init, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"Stand-in GPU" if h == 0 else fail(),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=37) if h == 0 else fail(),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=2 << 30, total=80 << 30) if h == 0 else fail(),
        nvmlDeviceGetTemperature=fail, nvmlDeviceGetPowerUsage=lambda h: 150_000,
        nvmlDeviceGetComputeRunningProcesses=fail)


@pytest.fixture
def nvml(monkeypatch):
    from trainingd.monitor import system

    def install(module):
        monkeypatch.setitem(sys.modules, "pynvml", module)
        monkeypatch.setattr(system, "_nvml_state", {"tried": False, "ok": False, "error": None})
    return install


def test_each_nvml_error_gives_null_for_that_value_only(tmp_path, serve, nvml):
    nvml(fake_nvml())
    client = serve(tmp_path / "h")
    first, second = client.json("/api/gpu")["gpus"]
    assert first == {"index": 0, "name": "Stand-in GPU", "util_percent": 37, "memory_used_bytes": 2 << 30,
                     "memory_total_bytes": 80 << 30, "temperature_c": None, "power_w": 150.0, "processes": []}
    assert second["name"] is None and second["memory_used_bytes"] is None and second["power_w"] == 150.0
    assert client.json("/api/system")["gpus"] == [first, second]
    text = client.get("/metrics")[2].decode()
    check_prometheus(text)
    assert f'trainingd_gpu_memory_used_bytes{{gpu="0",name="Stand-in GPU"}} {2 << 30}' in text


def test_a_failing_nvml_init_means_no_gpus_not_an_error(tmp_path, serve, nvml):
    nvml(fake_nvml(init_fails=True))
    client = serve(tmp_path / "h")
    assert client.json("/api/gpu")["gpus"] == []
    assert client.get("/metrics")[0] == 200
