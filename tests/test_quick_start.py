"""The README's first command: ./start_all.sh bootstraps, initialises a home and starts the daemon on the embedded
default base model (built locally on first use), which then trains a dropped file, and the web monitor, which
exits with the daemon."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request

import psutil
import pytest

from conftest import REPO, wait_for
from trainingd.instance import is_monitor_running
from trainingd.paths import Home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (not our child, not yet reaped by init) has exited."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_start_all_trains_the_sample_on_the_embedded_default_and_stops(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "PYTHON": sys.executable}
    port = free_port()
    res = subprocess.run([str(REPO / "start_all.sh"), "--home", str(home), "--monitor-port", str(port)],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    monitor_pid = int((home / ".monitor.pid").read_text())
    try:
        assert f"http://127.0.0.1:{port}/live_monitor_ui_v2.html" in res.stdout, res.stdout + res.stderr
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
            assert json.loads(r.read())["ok"] is True
        assert json.loads((home / "config.json").read_text())["base_model"] == "embedded:tiny-qwen3"
        shutil.copy(REPO / "examples" / "sample_chat.jsonl", home / "inbox" / "sample_chat.jsonl")
        wait_for(lambda: list((home / "queue" / "done").iterdir()), "the sample to be trained", limit_s=300)
        assert (home / "models" / "tiny-qwen3" / "config.json").exists()
        assert (home / "current_model" / "adapter_model.safetensors").exists()
        again = subprocess.run([str(REPO / "bin" / "launch_training_daemon.sh"), "--home", str(home)],
                               capture_output=True, text=True, timeout=120, env=env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stop = subprocess.run([sys.executable, str(REPO / "training_controller.py"), "stop", "--home", str(home),
                               "--wait", "--timeout", "120"], capture_output=True, text=True, timeout=180)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    wait_for(lambda: not is_alive(monitor_pid), "the monitor to exit with its daemon")
    assert not is_monitor_running(Home.at(home))
    assert not list((home / "queue" / "failed").iterdir())
