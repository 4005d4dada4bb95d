"""The formats people have train through the real daemon: a LLaMA-Factory Alpaca file dropped as a JSON array,
ShareGPT with tool calls, chat with tool calls, and OpenAI content parts.

    .venv/bin/pytest tests/test_formats_daemon.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, write_config, write_jsonl


def files(n: int = 6) -> dict[str, list[dict]]:
    tool = {"name": "lookup", "description": "Look a word up", "parameters": {"type": "object",
                                                                             "properties": {"q": {"type": "string"}}}}
    return {
        "alpaca.json": [{"instruction": f"Add {i} and 1", "input": "", "output": str(i + 1), "system": "Be brief.",
                         "history": [["Say yes", "yes"]]} for i in range(n)],
        "glaive.jsonl": [{"conversations": [
            {"from": "human", "value": f"Look up word {i}"},
            {"from": "function_call", "value": json.dumps({"name": "lookup", "arguments": {"q": f"word {i}"}})},
            {"from": "observation", "value": json.dumps({"meaning": "a word"})},
            {"from": "gpt", "value": f"Word {i} is a word."}], "tools": json.dumps([tool])} for i in range(n)],
        "tools.jsonl": [{"messages": [
            {"role": "user", "content": f"Look up word {i}"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"type": "function", "function": {"name": "lookup", "arguments": json.dumps({"q": str(i)})}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "a word"},
            {"role": "assistant", "content": "It is a word.", "train": True}], "tools": [tool]} for i in range(n)],
        "parts.jsonl": [{"messages": [
            {"role": "user", "content": [{"type": "text", "text": f"Question {i}"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "An answer."}], "loss_weight": 1}]}
            for i in range(n)],
    }


@pytest.mark.slow
def test_formats_people_have_train_through_the_daemon(home):
    write_config(home, max_length=1024)  # Qwen3's template writes the tool list into a long system prompt
    inbox = home / "inbox"
    inbox.mkdir(exist_ok=True)
    for name, records in files().items():
        if name.endswith(".json"):
            (inbox / name).write_text(json.dumps(records, indent=2))
        else:
            write_jsonl(inbox / name, records)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home), "--once"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    failed = {d.name: (d / "reason.txt").read_text() for d in (home / "queue" / "failed").iterdir()}
    assert failed == {}
    done = {json.loads((d / "job.json").read_text())["original_name"] for d in (home / "queue" / "done").iterdir()}
    assert done == {"alpaca.jsonl", "glaive.jsonl", "tools.jsonl", "parts.jsonl"}
    trained = json.loads((home / "current_model" / "adapter_state.json").read_text())["trained"]
    assert sorted(t["file"] for t in trained) == sorted(done)
    assert not [p for p in inbox.iterdir()]
