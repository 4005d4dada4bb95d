"""Every data format trains end to end through the daemon, with a held-out eval loss in history and metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, write_config, write_jsonl

WORDS = "the queue trains one adapter from every file dropped into the inbox folder".split()


def sentence(i: int, n: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n))


def records(fmt: str, n: int = 10) -> list[dict]:
    out = []
    for i in range(n):
        q, a = sentence(i, 5) + "?", sentence(i + 3, 8) + "."
        out.append({
            "messages": {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
            "prompt_completion": {"prompt": q, "completion": a},
            "alpaca": {"instruction": q, "input": sentence(i, 3) if i % 2 else "", "output": a},
            "sharegpt": {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": q},
                                           {"from": "gpt", "value": a}]},
            "text": {"text": q + " " + a},
        }[fmt])
    return out


FORMATS = ["messages", "prompt_completion", "alpaca", "sharegpt", "text"]


@pytest.mark.slow
def test_each_format_trains_through_the_daemon_and_reports_eval_loss(home):
    write_config(home, eval_fraction=0.2, eval_steps=2)
    for fmt in FORMATS:
        write_jsonl(home / "inbox" / f"{fmt}.jsonl", records(fmt))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home), "--once"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]

    history = [json.loads(line) for line in (home / "status" / "history.jsonl").read_text().splitlines()]
    by_file = {h["file"]: h for h in history}
    for fmt in FORMATS:
        entry = by_file[f"{fmt}.jsonl"]
        assert entry["state"] == "done" and entry["result"] == "ok", entry
        assert entry["format"] == fmt
        assert entry["steps"] >= 1 and entry["loss"] > 0
        assert entry["eval_loss"] is not None and entry["eval_loss"] > 0
    trained = json.loads((home / "current_model" / "adapter_state.json").read_text())["trained"]
    assert sorted(t["file"] for t in trained) == sorted(f"{fmt}.jsonl" for fmt in FORMATS)
    metrics = [json.loads(line) for line in (home / "status" / "metrics.jsonl").read_text().splitlines()]
    evals = [m for m in metrics if m.get("eval_loss") is not None]
    assert {m["job_id"] for m in evals} == {t["job_id"] for t in trained}
