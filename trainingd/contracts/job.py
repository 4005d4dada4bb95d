"""``queue/<state>/[<priority>/]<job_id>/job.json``: what a job is. Stdlib only.

Written by ``trainingd.jobqueue.JobQueue`` (the daemon, the inbox and ``training_queue.py`` all go through it)
with ``atomic_ops.atomic_write_json`` (tmp in the same folder, fsync, rename, fsync the folder), always before
the folder moves; read by the queue, the daemon and the CLIs. The folder a job sits in is the truth about its
state; ``state`` here is a copy for readers. Fields (timestamps are ISO-8601 UTC strings, ``null`` when not
yet reached)::

    {"id": "000012-chat",            # unique forever: a counter and the file's name
     "original_name": "chat.jsonl",  # as it arrived in inbox/ or on the command line
     "file": "chat.jsonl",           # the data file inside the job folder (no "/")
     "sha256": "...", "size_bytes": 1234,        # null for a rejected item that is not a regular file
     "priority": "high|normal|low", "source": "inbox|cli|generator", "force": false,
     "attempts": 0,                  # trainer crashes so far; reset by a retry
     "enqueued_at": "...", "claimed_at": null, "finished_at": null,
     "state": "pending|processing|done|failed",
     "duplicate_of": null,           # the job id a duplicate's content was trained with
     "reason": null,                 # why it failed (also in reason.txt beside it)
     "result": null}                 # the trainer's summary (done) or its result.json (failed)

Later transitions may add ``previous_reason``, ``rejected`` and ``broken``. A ``job.json`` that cannot be used
(invalid JSON, not an object, no usable ``file``) is reported by ``read_job`` with a reason and kept as
``job.json.broken`` (``keep_broken``) when the job is next written.

    python3 -c "from trainingd.contracts.job import read_job; print(read_job('queue/done/000001-x'))"
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, TypedDict

from trainingd.atomic_ops import atomic_write_json, read_json

FILE = "job.json"
BROKEN_FILE = "job.json.broken"


class JobMeta(TypedDict, total=False):
    id: str
    original_name: str
    file: str
    sha256: Optional[str]
    size_bytes: Optional[int]
    priority: str
    source: str
    force: bool
    attempts: int
    enqueued_at: str
    claimed_at: Optional[str]
    finished_at: Optional[str]
    state: str
    duplicate_of: Optional[str]
    reason: Optional[str]
    result: Any
    previous_reason: Optional[str]
    rejected: bool
    broken: str


def now_iso() -> str:
    """ISO-8601 UTC timestamp used in job.json and the status file."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_job(job_dir: Path | str) -> tuple[JobMeta | None, str | None]:
    """``(meta, None)`` for a usable job.json; ``(None, None)`` when there is none; ``(None, why)`` when broken.

    Raises OSError only when the file exists but cannot be read at all.
    """
    try:
        meta = read_json(Path(job_dir) / FILE, None)
    except ValueError as e:
        return None, f"job.json is not valid JSON ({e})"
    if meta is None:
        return None, None
    if not isinstance(meta, dict):
        return None, "job.json does not hold a JSON object"
    name = meta.get("file")
    if not (isinstance(name, str) and name and "/" not in name and name not in ("..", ".")):
        return None, f"job.json names no data file (\"file\": {json.dumps(name)})"
    return meta, None  # type: ignore[return-value]


def write_job(job_dir: Path | str, meta: JobMeta | dict) -> None:
    """Replace a job's job.json atomically and durably."""
    atomic_write_json(Path(job_dir) / FILE, meta, point="job_meta")


def keep_broken(job_dir: Path | str) -> None:
    """Keep an unusable job.json (a hand edit a person may want to see) as job.json.broken, once."""
    job_dir = Path(job_dir)
    if (job_dir / BROKEN_FILE).exists():
        return
    with contextlib.suppress(FileNotFoundError):
        os.replace(job_dir / FILE, job_dir / BROKEN_FILE)
