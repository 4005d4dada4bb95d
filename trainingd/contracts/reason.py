"""``<job folder>/reason.txt``: why a job is in ``queue/failed/``, in words a person can act on. Stdlib only.

Written by the queue (``trainingd.jobqueue``: a failed, rejected or removed job) with ``atomic_ops.atomic_write_text``
before the folder is renamed into ``failed/``, so a failed job never lacks it (invariant 7); read by people, the
CLIs and the invariant checker (``trainingd.checks.invariants``). Plain UTF-8 text ending in one newline; the same
text is ``job.json``'s ``reason``. Removed when a job is retried (its text stays as ``previous_reason``).
"""

from __future__ import annotations

from pathlib import Path

from trainingd.atomic_ops import atomic_write_text

FILE = "reason.txt"


def reason_path(job_dir: Path | str) -> Path:
    return Path(job_dir) / FILE


def write_reason(job_dir: Path | str, reason: str) -> None:
    atomic_write_text(reason_path(job_dir), reason.rstrip("\n") + "\n")


def read_reason(job_dir: Path | str) -> str:
    """The reason, stripped; ``""`` when there is none or it cannot be read."""
    try:
        return reason_path(job_dir).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""
