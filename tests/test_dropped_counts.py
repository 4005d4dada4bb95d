"""No example is dropped in silence: counts in history, the status file, the controller's view and the log."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, chat_lines, write_jsonl
from trainingd.cli.formatting import format_summary
from trainingd.contracts.status import compose_status


def test_status_and_controller_show_dropped_and_truncated_counts():
    data = {"format": "messages", "examples": 13, "kept": 10, "dropped_too_long": 3, "truncated": 0,
            "no_trained_tokens": 0, "max_length": 128, "tokens": 999, "dropped": [{"line": 4}]}
    doc = compose_status(daemon={"pid": 1}, status="training", job={"id": "000001-x", "file": "x.jsonl"},
                         progress={"job_id": "000001-x", "step": 1, "data": data})
    assert doc["job"]["data"] == {"format": "messages", "examples": 13, "kept": 10, "dropped_too_long": 3,
                                  "truncated": 0, "no_trained_tokens": 0, "max_length": 128}
    text = format_summary({"home": "/h", "status": doc, "queue": [], "daemon_running": True})
    assert "data:      13 messages examples, 10 kept, 3 dropped as longer than max_length 128" in text


@pytest.mark.slow
def test_a_file_losing_long_examples_reports_them_in_history_and_warns_in_the_log(home):
    long_answer = " ".join(["the queue trains one adapter"] * 60)
    records = chat_lines(10) + [{"messages": [{"role": "user", "content": "Tell me everything"},
                                              {"role": "assistant", "content": long_answer}]}] * 3
    write_jsonl(home / "inbox" / "mixed.jsonl", records)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home), "--once"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    (entry,) = [json.loads(line) for line in (home / "status" / "history.jsonl").read_text().splitlines()]
    assert entry["state"] == "done"
    assert (entry["kept"], entry["dropped_too_long"], entry["truncated"]) == (10, 3, 0)
    log = (home / "logs" / "training_output.log").read_text()
    assert "mixed.jsonl: 3 of 13 examples dropped as longer than max_length 128" in log
