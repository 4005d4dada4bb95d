"""The monitor process's life, with real processes: one per home, a clear refusal of a taken port, and
``--exit-with-daemon`` ending it when a real daemon stops.

    ./run_tests.sh tests/test_monitor_lifecycle.py -q
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, wait_for
from trainingd import exit_codes as ec
from trainingd.instance import is_daemon_running, is_monitor_running
from trainingd.paths import Home

ENV = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
        return json.loads(r.read())


@pytest.fixture
def monitors():
    """Start ``launch_live_monitor.py`` processes; SIGTERM whatever is still running after the test."""
    procs: list[subprocess.Popen] = []

    def start(home: Path, port: int, *extra: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(REPO / "launch_live_monitor.py"), "--home", str(home),
                              "--port", str(port), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=ENV)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)


def wait_listening(home: Path, proc: subprocess.Popen) -> None:
    """The pid file appears once the monitor listens."""
    def ready():
        assert proc.poll() is None, proc.communicate()
        return (home / ".monitor.pid").exists() and int((home / ".monitor.pid").read_text()) == proc.pid
    wait_for(ready, "the monitor to listen")


def test_a_second_monitor_for_the_same_home_is_refused_and_sigterm_ends_the_first(tmp_path, monitors):
    home = tmp_path / "home"
    port = free_port()
    first = monitors(home, port)
    wait_listening(home, first)
    assert healthz(port)["ok"] is True
    assert is_monitor_running(Home.at(home))

    second = monitors(home, free_port())
    out, err = second.communicate(timeout=60)
    assert second.returncode == ec.ALREADY_RUNNING, err
    assert f"trainingd monitor already running for {home.resolve()} (pid {first.pid})" in err
    assert "Traceback" not in err
    assert healthz(port)["ok"] is True  # the first one is untouched

    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == ec.OK
    assert not (home / ".monitor.pid").exists()
    assert not is_monitor_running(Home.at(home))


def test_a_port_in_use_is_one_clear_line_naming_the_port_and_the_option(tmp_path, monitors):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = monitors(tmp_path / "home", port)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == ec.ERROR
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"port {port}" in lines[0] and "--port" in lines[0] and "in use" in lines[0]
    assert not is_monitor_running(Home.at(tmp_path / "home"))
    assert not (tmp_path / "home" / ".monitor.pid").exists()


@pytest.mark.slow
def test_exit_with_daemon_ends_the_monitor_when_the_daemon_stops(tmp_path, monitors):
    home = tmp_path / "home"
    launched = subprocess.run(["bash", str(REPO / "bin" / "launch_training_daemon.sh"), "--home", str(home)],
                              capture_output=True, text=True, timeout=120, env=ENV)
    assert launched.returncode == 0, launched.stderr
    daemon_pid = int((home / ".daemon.pid").read_text())
    try:
        port = free_port()
        tied = monitors(home, port, "--exit-with-daemon")
        wait_listening(home, tied)
        assert healthz(port)["ok"] is True
        assert tied.poll() is None
    finally:
        os.kill(daemon_pid, signal.SIGTERM)
        wait_for(lambda: not is_daemon_running(Home.at(home)), "the daemon to stop")
    assert tied.wait(timeout=60) == ec.OK
    assert not is_monitor_running(Home.at(home))
    assert not (home / ".monitor.pid").exists()


@pytest.mark.slow
def test_start_all_starts_the_daemon_and_says_so_when_the_monitor_port_is_taken(tmp_path):
    home = tmp_path / "home"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = subprocess.run([str(REPO / "start_all.sh"), "--home", str(home), "--monitor-port", str(port)],
                             capture_output=True, text=True, timeout=600, env=ENV)
    try:
        assert res.returncode == 0, res.stdout + res.stderr
        assert is_daemon_running(Home.at(home))
        assert "the daemon runs, but the monitor did not start" in res.stderr
        assert f"port {port}" in res.stderr and "--port" in res.stderr
        assert "live_monitor_ui_v2.html" not in res.stdout
        assert not is_monitor_running(Home.at(home))
    finally:
        if is_daemon_running(Home.at(home)):
            os.kill(int((home / ".daemon.pid").read_text()), signal.SIGTERM)
            wait_for(lambda: not is_daemon_running(Home.at(home)), "the daemon to stop")
