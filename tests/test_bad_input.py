"""Bad input never stops the daemon and is never lost: each bad file lands in queue/failed/ with a reason.

One real daemon (``training_daemon.py --once``) with the real trainer drains an inbox holding every kind of bad
file next to good ones; the good ones (one with spaces and unicode in its name) are trained normally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, chat_lines, write_jsonl

LONG_ANSWER = " ".join(["the model learns to answer questions about data files"] * 40)

# file name -> (content, words the reason must contain)
BAD_FILES: dict[str, tuple[bytes, list[str]]] = {
    "malformed.jsonl": (
        (json.dumps(chat_lines(1)[0]) + "\n" + '{"messages": [}\n').encode(),
        ["line 2", "invalid JSON"],
    ),
    "wrong_shape.jsonl": (
        (json.dumps(chat_lines(1)[0]) + "\n" + json.dumps({"messages": [{"role": "robot", "content": "hi"}]})
         + "\n").encode(),
        ["line 2", "robot"],
    ),
    "empty.jsonl": (b"", ["empty"]),
    "binary.jsonl": (b'{"text": "a"}\n\x00\x01\x02\xff\xfe binary', ["binary"]),
    "latin1.jsonl": ('{"text": "café au lait"}\n'.encode("latin-1"), ["line 1", "UTF-8"]),
    "too_long.jsonl": (
        "".join(json.dumps({"messages": [{"role": "user", "content": "Explain?"},
                                         {"role": "assistant", "content": LONG_ANSWER}]}) + "\n"
                for _ in range(3)).encode(),
        ["max_length"],
    ),
}


def reason_of(root: Path, original_name: str) -> str:
    for job_dir in (root / "queue" / "failed").iterdir():
        meta = json.loads((job_dir / "job.json").read_text())
        if meta.get("original_name") == original_name:
            return (job_dir / "reason.txt").read_text()
    raise AssertionError(f"{original_name} is not in queue/failed/")


@pytest.mark.slow
def test_every_bad_file_fails_with_a_reason_and_the_good_files_still_train(home, tmp_path):
    inbox = home / "inbox"
    inbox.mkdir(exist_ok=True)
    for name, (content, _) in BAD_FILES.items():
        (inbox / name).write_bytes(content)
    outside = write_jsonl(tmp_path / "outside.jsonl", chat_lines(4))
    (inbox / "link.jsonl").symlink_to(outside)
    write_jsonl(inbox / "my data ü 日本.jsonl", chat_lines(6, seed=1))
    write_jsonl(inbox / "good.jsonl", chat_lines(6, seed=2))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home), "--once"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]

    for name, (_, words) in BAD_FILES.items():
        reason = reason_of(home, name)
        for word in words:
            assert word in reason, f"{name}: reason {reason!r} lacks {word!r}"
    assert "symlink" in reason_of(home, "link.jsonl")
    assert outside.exists() and len(outside.read_text().splitlines()) == 4  # the link's target is untouched

    done = {json.loads((d / "job.json").read_text())["original_name"] for d in (home / "queue" / "done").iterdir()}
    assert done == {"my data ü 日本.jsonl", "good.jsonl"}
    trained = json.loads((home / "current_model" / "adapter_state.json").read_text())["trained"]
    assert sorted(t["file"] for t in trained) == sorted(done)
    # Nothing is lost: every file dropped is in exactly one job folder, and the inbox is empty.
    assert len(list((home / "queue" / "failed").iterdir())) == len(BAD_FILES) + 1
    assert not [p for p in inbox.iterdir() if not p.name.startswith(".")]
