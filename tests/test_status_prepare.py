"""Long data preparation shows its own progress in the status file, read the way the controller reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, chat_lines, wait_for, write_config, write_jsonl


@pytest.mark.slow
def test_preparing_a_big_file_reports_lines_done_in_the_status_file(home):
    # max_length 16 drops every example after tokenizing, so the job ends as a data error without training.
    write_config(home, max_length=16)
    write_jsonl(home / "inbox" / "big.jsonl", chat_lines(30_000))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home), "--once"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    seen: list[dict] = []

    def preparing() -> bool:
        try:
            status = json.loads((home / "status" / "training_status.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        prep = status.get("prepare")
        if prep and prep.get("lines_done"):
            seen.append(prep)
        return len(seen) >= 2 or proc.poll() is not None

    try:
        wait_for(preparing, "preparation progress in the status file", limit_s=300)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    assert seen, "the status file never showed preparation progress"
    assert all(p["phase"] in ("validating", "tokenizing") for p in seen)
    assert all(0 < p["lines_done"] <= 30_000 for p in seen)
    (failed,) = list((home / "queue" / "failed").iterdir())
    assert "max_length" in (failed / "reason.txt").read_text()
