"""A full disk never kills the daemon: it records the error, backs off, and carries on once there is room.

The home lives on a small tmpfs mounted for the test (the tests run as root, as CI does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, chat_lines, wait_for, write_jsonl


def fill(path: Path) -> None:
    """Write zeros into ``path`` until the filesystem is full."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        chunk = b"\0" * 512
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True, text=True)
    assert res.returncode == 0, f"this test needs to mount a tmpfs (run as root): {res.stderr}"
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_daemon_survives_a_full_disk_and_trains_once_space_returns(small_fs, tiny_model):
    home = small_fs / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"base_model": str(tiny_model), "max_length": 128, "batch_size": 2,
                                                  "gradient_accumulation": 1, "save_steps": 100}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: (home / "status" / "training_status.json").exists(), "the daemon to start")
        filler = small_fs / "filler"
        fill(filler)
        # Status writes now fail with ENOSPC on every tick; the daemon must keep running.
        time.sleep(3)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        filler.unlink()

        write_jsonl(home / "inbox" / "after.jsonl", chat_lines(8))
        wait_for(lambda: list((home / "queue" / "done").iterdir()), "the file to be trained", limit_s=180)
        status = json.loads((home / "status" / "training_status.json").read_text())
        assert "No space left on device" in (status["last_error"] or {}).get("message", "")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert proc.returncode == 0
