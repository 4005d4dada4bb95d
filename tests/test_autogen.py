"""Auto-generate: the daemon asks a real generator for data when its queue runs dry; a misbehaving one never
leaves anything partial in the queue, and the daemon keeps answering control requests meanwhile.

Run: .venv/bin/python -m pytest tests/test_autogen.py -q      (``-m "not slow"`` leaves out real training)

The generators are real HTTP servers on ephemeral ports: the reference one (``trainingd.generator.server``)
and a small stdlib one that misbehaves on purpose (500, a body cut half-way, garbage, too few lines).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import wait_for, write_config
from trainingd.daemon.autogen import AutoGenerator, FetchError, check_url, fetch_batch
from trainingd.config import AutoGenerateConfig, ConfigError, parse_config
from trainingd.contracts.requests import write_request
from trainingd.generator.puzzles import make_puzzle
from trainingd.generator.server import serve_in_thread
from trainingd.jobqueue import JobQueue
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent
DAEMON = [sys.executable, str(REPO / "training_daemon.py")]


class Misbehaving(BaseHTTPRequestHandler):
    """A generator that fails in the way its server's ``mode`` says."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self.server.requests += 1
        mode = self.server.mode
        if mode == "500":
            self.send_error(500, "generator exploded")
            return
        lines = [json.dumps(make_puzzle(1, i).record()) for i in range(10)]
        if mode == "garbage":
            lines[4] = "this is not json {"
        if mode == "short":
            lines = lines[:7]
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if mode == "cut":  # half the body, then the connection drops without the last chunk
            half = body[:len(body) // 2]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if mode == "slow":
            self.wfile.write(b"%x\r\n%s\r\n" % (len(lines[0]) + 1, lines[0].encode() + b"\n"))
            self.wfile.flush()
            time.sleep(5)
            return
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))


@pytest.fixture
def misbehaving():
    servers = []

    def make(mode: str) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), Misbehaving)
        server.daemon_threads = True
        server.mode, server.requests = mode, 0
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture
def generator():
    server, url = serve_in_thread("127.0.0.1", 0)
    yield url
    server.shutdown()
    server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def url_of(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------------------------------------- unit
def test_only_loopback_urls_unless_remote_is_allowed():
    assert check_url("http://127.0.0.1:8091", False) is None
    assert check_url("http://localhost:8091/", False) is None
    assert check_url("http://[::1]:8091", False) is None
    assert "allow_remote" in check_url("http://10.1.2.3:8091", False)
    assert "allow_remote" in check_url("http://example.com", False)
    assert check_url("http://example.com", True) is None
    assert "http://" in check_url("ftp://127.0.0.1/", True)
    with pytest.raises(ConfigError, match="auto_generate.url"):
        parse_config({"auto_generate": {"enabled": True, "url": "http://192.168.1.5:8091"}})
    parse_config({"auto_generate": {"enabled": True, "url": "http://192.168.1.5:8091", "allow_remote": True}})
    with pytest.raises(ConfigError, match="auto_generate.level"):
        parse_config({"auto_generate": {"level": 9}})


def test_fetch_names_the_file_and_keeps_every_line(tmp_path, generator):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path, n = fetch_batch(generator, count=50, seed=3, level=2, timeout_s=10, tmp_dir=tmp_path / ".autogen",
                          inbox=inbox)
    assert n == 50 and path.parent == inbox
    assert path.name.startswith("syllo_autogen_") and path.name.endswith("_count50.jsonl")
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines == [make_puzzle(3, i, 2).record() for i in range(50)]
    assert list((tmp_path / ".autogen").iterdir()) == []
    again, _ = fetch_batch(generator, count=5, seed=4, level=2, timeout_s=10, tmp_dir=tmp_path / ".autogen",
                           inbox=inbox, now=__import__("datetime").datetime.strptime(
                               path.name[14:29], "%Y%m%d_%H%M%S"))
    assert again != path and path.exists()  # the same second never replaces a file


@pytest.mark.parametrize("mode", ["500", "cut", "garbage", "short", "slow", "down"])
def test_a_failed_fetch_leaves_nothing_behind(tmp_path, misbehaving, mode):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    url = closed_port_url() if mode == "down" else url_of(misbehaving(mode))
    with pytest.raises(FetchError):
        fetch_batch(url, count=10, seed=1, level=1, timeout_s=1.0, tmp_dir=tmp_path / ".autogen", inbox=inbox)
    assert list(inbox.iterdir()) == []
    assert list((tmp_path / ".autogen").iterdir()) == []


def test_failures_back_off_exponentially_and_seeds_advance_only_on_success(tmp_path, misbehaving, generator):
    home = Home.at(tmp_path)
    home.inbox.mkdir()
    home.status_dir.mkdir()
    clock = [100.0]
    ag = AutoGenerator(home, clock=lambda: clock[0])
    bad = AutoGenerateConfig(enabled=True, url=url_of(misbehaving("500")), count=10, min_interval_s=0, seed=7)
    waits = []
    for _ in range(4):
        ag.tick(bad, pending_jobs=0, may_start=True)
        ag.thread.join(10)
        ag.tick(bad, pending_jobs=0, may_start=True)  # reaps the failure; too early to try again
        assert not ag.busy()
        waits.append(ag.next_at - clock[0])
        clock[0] = ag.next_at
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert ag.status()["state"] == "backoff" and "HTTP 500" in ag.status()["last_error"]
    assert ag.next_seed(bad) == 7
    good = AutoGenerateConfig(enabled=True, url=generator, count=10, min_interval_s=0, seed=7,
                              max_pending_generated=5)
    for expected in (7, 8):
        ag.tick(good, pending_jobs=0, may_start=True)
        ag.thread.join(10)
        ag.tick(good, pending_jobs=0, may_start=False)
        assert ag.status()["last"]["seed"] == expected
    assert ag.status()["failures"] == 0 and ag.next_seed(good) == 9
    assert AutoGenerator(home).next_seed(good) == 9, "the next seed survives a restart"
    files = sorted(p.name for p in home.inbox.iterdir())
    assert len(files) == 2 and files[0] != files[1]
    assert (home.inbox / files[0]).read_text() != (home.inbox / files[1]).read_text()
    ag.tick(good, pending_jobs=1, may_start=True)  # above low_water: no request
    assert not ag.busy()


def test_no_request_while_enough_generated_files_wait(tmp_path, generator):
    home = Home.at(tmp_path)
    home.inbox.mkdir()
    home.status_dir.mkdir()
    (home.inbox / "syllo_autogen_20260101_000000_count10.jsonl").write_text("")
    ag = AutoGenerator(home)
    ag.tick(AutoGenerateConfig(enabled=True, url=generator, max_pending_generated=1, min_interval_s=0),
            pending_jobs=0, may_start=True)
    assert not ag.busy()


def test_an_unreadable_state_file_starts_again_from_the_configured_seed(tmp_path):
    home = Home.at(tmp_path)
    home.status_dir.mkdir()
    (home.status_dir / "autogen_state.json").write_text("{not json")
    assert AutoGenerator(home).next_seed(AutoGenerateConfig(seed=11)) == 11


# ---------------------------------------------------------------------------------------------- daemon
def start_daemon(root: Path) -> subprocess.Popen:
    return subprocess.Popen([*DAEMON, "--home", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def read_status(root: Path) -> dict:
    try:
        return json.loads((root / "status" / "training_status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def stop_daemon(root: Path, proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        write_request(Home.at(root), "stop")
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("mode", ["down", "500", "cut", "garbage"])
def test_a_misbehaving_generator_leaves_the_queue_empty_and_the_daemon_steerable(tmp_path, misbehaving, mode):
    root = tmp_path / "home"
    root.mkdir()
    url = closed_port_url() if mode == "down" else url_of(misbehaving(mode))
    write_config(root, auto_generate={"enabled": True, "url": url, "count": 10, "min_interval_s": 0,
                                      "timeout_s": 5})
    proc = start_daemon(root)
    try:
        st = wait_for(lambda: (read_status(root).get("auto_generate") or {}).get("failures", 0) >= 2 and
                      read_status(root), "two failed requests")
        assert st["auto_generate"]["state"] in ("backoff", "fetching") and st["auto_generate"]["last_error"]
        home = Home.at(root)
        req = write_request(home, "pause")
        wait_for(lambda: any(a["id"] == req.id for a in read_status(root)["control"]["acks"]), "the pause ack", 30)
        assert read_status(root)["status"] == "paused"
        counts = JobQueue(home).counts()
        assert sum(counts["pending"].values()) == 0 and counts["processing"] == 0 and counts["failed"] == 0
        assert list(home.inbox.iterdir()) == []
        assert not list((root / ".autogen").glob("*"))
    finally:
        stop_daemon(root, proc)
    assert proc.returncode == 0
    log = Home.at(root).daemon_log.read_text()
    failures = [line for line in log.splitlines() if "auto-generate: request to" in line]
    assert len(failures) >= 2 and all("failed:" in line for line in failures)


@pytest.mark.slow
def test_an_empty_queue_is_fed_by_the_generator_trained_and_evaluated(home, generator):
    write_config(home, max_length=256,
                 auto_generate={"enabled": True, "url": generator, "count": 16, "min_interval_s": 0,
                                      "seed": 5, "max_pending_generated": 1},
                 evaluation={"after_each_job": True, "count": 12, "max_new_tokens": 8})
    proc = start_daemon(home)
    try:
        def evaluated():
            h = Home.at(home).history
            lines = [json.loads(x) for x in h.read_text().splitlines()] if h.exists() else []
            return lines if any(e.get("kind") == "eval" for e in lines) else None

        seen_states = set()

        def evaluated_watching():
            seen_states.add(read_status(home).get("status"))
            return evaluated()

        history = wait_for(evaluated_watching, "a generated job trained and evaluated", 300)
        st = wait_for(lambda: (read_status(home).get("eval") or {}).get("last") and read_status(home),
                      "the eval block in the status")
    finally:
        stop_daemon(home, proc)
    done = [e for e in history if e.get("state") == "done"]
    assert done and done[0]["result"] == "ok"
    assert done[0]["file"].startswith("syllo_autogen_") and done[0]["file"].endswith("_count16.jsonl")
    ev = next(e for e in history if e.get("kind") == "eval")
    assert ev["total"] == 12 and 0 <= ev["exact_match"] <= 1 and 0 <= ev["token_accuracy"] <= 1
    assert ev["trained_examples"] == 16 and ev["job_id"] == done[0]["job_id"]
    assert st["eval"]["last"]["total"] == 12
    assert "evaluating" in seen_states
    assert st["auto_generate"]["batches"] >= 1 and st["auto_generate"]["last"]["seed"] >= 5
    job = next(j for j in JobQueue(Home.at(home)).jobs(["done"]) if j.meta.get("original_name") == done[0]["file"])
    assert job.priority == "low"


def test_a_batch_the_trainer_refuses_is_not_fetched_again_in_a_loop(tmp_path, generator, contract_trainer_env):
    root = tmp_path / "home"
    root.mkdir()
    write_config(root, auto_generate={"enabled": True, "url": generator, "count": 4, "min_interval_s": 0})
    proc = subprocess.Popen([*DAEMON, "--home", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=contract_trainer_env)
    try:
        wait_for(lambda: "was refused" in str((read_status(root).get("auto_generate") or {}).get("last_error")),
                 "the refused batch noticed")
        time.sleep(8)
        failed = JobQueue(Home.at(root)).counts()["failed"]
        # Without the back-off this is about two batches a second.
        assert failed <= 7, f"{failed} generated batches failed: the generator is asked again in a loop"
        assert read_status(root)["auto_generate"]["refused_batches_in_a_row"] >= 1
    finally:
        stop_daemon(root, proc)


@pytest.fixture
def contract_trainer_env(tmp_path) -> dict:
    """A trainer that refuses every file as bad data (exit 4, DATA_ERROR), the way a too-long batch is refused."""
    script = tmp_path / "refusing_trainer.py"
    script.write_text(
        "import argparse, json, sys\n"
        "p = argparse.ArgumentParser()\n"
        "for n in ('--home', '--job-id', '--dataset', '--reason-file', '--parent-pid'): p.add_argument(n)\n"
        "a = p.parse_args()\n"
        "json.dump({'exit': 'data_error', 'reason': 'every example is too long', 'details': [], 'summary': {}},"
        " open(a.reason_file, 'w'))\n"
        "sys.exit(4)\n")
    return {**os.environ, "TRAININGD_TRAINER": str(script), "HF_HUB_OFFLINE": "1"}
