"""One installed command: trainingd start|daemon|train|consolidate|logs, and trainingd --help.

    nice -n 5 .venv/bin/python -m pytest -q tests/test_commands.py

Real daemons in the background, real files; each test stops what it started.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import wait_for
from trainingd.cli.main import trainingd_parser
from trainingd.instance import is_daemon_running
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent


def trainingd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "trainingd", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "home"
    yield root
    pid_file = root / ".daemon.pid"
    if pid_file.exists() and is_daemon_running(Home.at(root)):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        wait_for(lambda: not is_daemon_running(Home.at(root)), "the daemon to exit")


def test_help_lists_every_command_in_one_line_each():
    out = trainingd("--help").stdout
    listing = out.split("COMMAND\n", 1)[1].split("\noptions:", 1)[0].splitlines()
    names = [m.group(1) for line in listing if (m := re.match(r"    (\S+)\s+\S", line))]
    sub = next(a for a in trainingd_parser()._actions if a.dest == "command")
    assert names == list(sub.choices), listing
    assert len(listing) == len(names), "a command's help wraps onto a second line"
    for name in ("start", "daemon", "train", "consolidate", "logs", "status", "stop", "init"):
        assert name in names


def test_start_runs_one_daemon_in_the_background_and_refuses_a_second_with_the_launchers_code(root):
    r = trainingd("start", "--home", str(root))
    assert r.returncode == 0, r.stderr
    pid = int((root / ".daemon.pid").read_text())
    assert f"pid {pid}" in r.stdout and is_daemon_running(Home.at(root))
    os.kill(pid, 0)
    again = trainingd("--home", str(root), "start")
    launcher = subprocess.run(["bash", str(REPO / "bin" / "launch_training_daemon.sh"), "--home", str(root)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert again.returncode == launcher.returncode == 1
    for refused in (again, launcher):
        assert f"trainingd daemon already running for {root.resolve()} (pid {pid})" in refused.stderr
    assert int((root / ".daemon.pid").read_text()) == pid
    r = trainingd("stop", "--wait", "--home", str(root))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: not is_daemon_running(Home.at(root)), "the daemon to stop")


def test_logs_prints_the_end_of_todays_log_and_follows_it(root):
    r = trainingd("logs", "--home", str(root))
    assert r.returncode == 1 and "no daemon log yet" in r.stderr
    assert trainingd("start", "--home", str(root)).returncode == 0
    wait_for(lambda: "watching" in trainingd("logs", "--home", str(root)).stdout, "the daemon's first lines")
    r = trainingd("logs", "-n", "1", "--home", str(root))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1
    # Ctrl-C ends it: a shell's background job (CI's, say) starts with SIGINT ignored, so give it the default back.
    follower = subprocess.Popen([sys.executable, "-m", "trainingd", "logs", "-f", "-n", "0", "--home", str(root)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen: list[str] = []
    threading.Thread(target=lambda: seen.extend(follower.stdout), daemon=True).start()
    try:
        # A line the daemon writes once the follower is reading (it starts at the end: -n 0); only then stop, so
        # a slow start of the follower under load cannot miss the last line.
        def follower_sees_a_new_line() -> bool:
            trainingd("pause", "--home", str(root))
            return "control request" in "".join(seen)

        wait_for(follower_sees_a_new_line, "logs -f to show a line written after it started")
        assert trainingd("stop", "--wait", "--home", str(root)).returncode == 0
        wait_for(lambda: "daemon exiting" in "".join(seen), "logs -f to show the daemon's last line")
        assert "daemon starting" not in "".join(seen), "-n 0 prints no earlier line"
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0


def test_daemon_runs_in_the_foreground_with_the_daemons_options(root):
    r = trainingd("--home", str(root), "daemon", "--once")
    assert r.returncode == 0, r.stderr
    assert "queue empty (--once)" in r.stderr
    assert "--max-jobs" in trainingd("daemon", "--help").stdout


def test_consolidate_and_train_are_the_seeds_scripts(root):
    root.mkdir()
    r = trainingd("consolidate", "--list", "--home", str(root))
    assert r.returncode == 0 and "no consolidated bases" in r.stdout
    r = trainingd("--home", str(root), "--json", "consolidate", "--list")
    assert r.returncode == 0 and r.stdout.strip() == "[]"
    r = trainingd("train", "--help")
    assert r.returncode == 0 and "--dataset" in r.stdout and "--output-dir" in r.stdout
    r = trainingd("train", "--dataset", str(root / "absent.jsonl"), "--model", "embedded:tiny-qwen3",
                  "--output-dir", str(root / "out"))
    assert r.returncode == 2 and "no such file" in r.stderr
