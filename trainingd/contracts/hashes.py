"""``queue/hashes.jsonl``: the sha256 of every file the queue accepted, under its job id, append-only. Stdlib only.

Appended by the queue (``trainingd.jobqueue.JobQueue``: the daemon's intake of ``inbox/``, the recovery of
``queue/.incoming/`` at start, and ``trainingd queue add``) with ``atomic_ops.append_jsonl`` right after a new job's
folder was renamed into ``pending/``; a job whose file could not be hashed gets no line. Never rewritten, and kept
when job folders are removed, so it says what content came in under which job id for as long as the home lives.
Read by people and tools (``read_hashes``, which skips a torn last line). It is a record, not the truth: a crash
between the rename and the append loses that job's line (``job.json`` has the same sha256), and the daemon's
duplicate check asks the adapter's lineage instead (``trainingd.lifecycle.ancestry``). One line::

    {"sha256": "9f86d0...", "job_id": "000012-chat", "file": "chat.jsonl", "at": "2026-11-30T10:00:00Z"}

(``file`` is the data file's name in the job folder; ``at`` the job's ``enqueued_at``.)

    python3 -c "from trainingd.contracts.hashes import read_hashes; from trainingd.paths import Home
    print(read_hashes(Home.at('.'))[-3:])"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainingd.atomic_ops import append_jsonl, read_jsonl
from trainingd.paths import Home


def log_path(home: Home) -> Path:
    return home.hashes


def append_hash(home: Home, meta: dict[str, Any]) -> None:
    """Record an accepted job from its ``job.json`` (``id``, ``sha256``, ``file``, ``enqueued_at``)."""
    append_jsonl(log_path(home), {"sha256": meta["sha256"], "job_id": meta["id"], "file": meta["file"],
                                  "at": meta["enqueued_at"]})


def read_hashes(home: Home) -> list[dict[str, Any]]:
    """Every complete line, oldest first (an empty list when the queue never accepted a file)."""
    return [r for r in read_jsonl(log_path(home)) if isinstance(r, dict)]
