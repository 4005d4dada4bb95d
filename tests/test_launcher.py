"""bin/launch_training_daemon.sh: background start, pid file, refusal of a second launch, stale pid files.

Run: .venv/bin/python -m pytest tests/test_launcher.py -q
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainingd.instance import is_daemon_running as is_locked
from trainingd.paths import Home
from conftest import wait_for

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "bin" / "launch_training_daemon.sh"


def launch(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(["bash", str(LAUNCHER), *args], capture_output=True, text=True, timeout=120, env=env, **kw)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "home"
    yield root
    # Stop whatever daemon a test left running, by its own pid.
    pid_file = root / ".daemon.pid"
    if pid_file.exists() and is_locked(Home.at(root)):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        wait_for(lambda: not is_locked(Home.at(root)), "the daemon to exit")


def test_launch_starts_one_daemon_in_the_background_and_refuses_a_second(root):
    res = launch("--home", str(root))
    assert res.returncode == 0, res.stderr
    pid = int((root / ".daemon.pid").read_text())
    assert f"pid {pid}" in res.stdout
    assert is_locked(Home.at(root))
    os.kill(pid, 0)  # alive after the launcher has returned
    again = launch("--home", str(root))
    assert again.returncode == 1
    assert f"trainingd daemon already running for {root.resolve()} (pid {pid})" in again.stderr
    assert int((root / ".daemon.pid").read_text()) == pid
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not is_locked(Home.at(root)), "the daemon to stop")
    assert not (root / ".daemon.pid").exists()


def test_a_stale_pid_file_does_not_block_a_start(root):
    root.mkdir()
    stale = dead_pid()
    (root / ".daemon.pid").write_text(f"{stale}\n")
    (root / ".daemon.lock").touch()
    res = launch("--home", str(root))
    assert res.returncode == 0, res.stderr
    pid = int((root / ".daemon.pid").read_text())
    assert pid != stale and is_locked(Home.at(root))


def test_launcher_uses_trainingd_home_when_no_home_is_given(root):
    root.mkdir()
    env_home = {**os.environ, "TRAININGD_HOME": str(root)}
    res = subprocess.run(["bash", str(LAUNCHER)], capture_output=True, text=True, timeout=120,
                         env={**env_home, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    assert (root / ".daemon.pid").exists() and is_locked(Home.at(root))
