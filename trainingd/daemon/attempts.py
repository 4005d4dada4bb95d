"""Attempts count only failures that made no progress. Stdlib only (the daemon never imports the trainer).

A job's trainer may be killed (the OOM killer, a reboot, a daemon killed with it) many times over a long file; each
time it resumes from its last complete checkpoint. Such an ending is not the job's fault as long as the checkpoint
moved on while it ran: the daemon records the job's latest complete checkpoint step when it starts a trainer
(``job.json["checkpoint_step_at_start"]``) and, when the trainer ends without a result, counts an attempt only if
that step has not advanced. ``max_attempts`` failures in a row with no progress fail the job; any progress starts
the count again.

    step = checkpoint_step(home, job.id)          # 0 when there is none
    attempts = next_attempts(home, job)           # what job.json["attempts"] becomes after this ending
"""

from __future__ import annotations

import os
import re

from trainingd.jobqueue import Job
from trainingd.paths import Home

START_KEY = "checkpoint_step_at_start"
_STEP_RE = re.compile(r"^step-(\d{6,})$")  # the trainer's checkpoint folders (trainingd.train.checkpoint)
COMPLETE = "COMPLETE"  # written last into a checkpoint folder: only then does it count


def checkpoint_step(home: Home, job_id: str) -> int:
    """The step of the job's latest complete checkpoint (0 when it has none). Links are never followed."""
    folder = home.job_checkpoints(job_id)
    best = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        m = _STEP_RE.match(entry.name)
        if m and entry.is_dir(follow_symlinks=False) and os.path.isfile(os.path.join(entry.path, COMPLETE)):
            best = max(best, int(m.group(1)))
    return best


def made_progress(home: Home, job: Job) -> bool:
    """Did the job's checkpoint advance since its trainer was last started?"""
    at_start = job.meta.get(START_KEY)
    if not isinstance(at_start, int):
        return False  # started by a daemon that did not record it: counted, as before
    return checkpoint_step(home, job.id) > at_start


def next_attempts(home: Home, job: Job) -> int:
    """``attempts`` after a trainer of ``job`` ended without finishing: 0 when it made progress, else one more."""
    if made_progress(home, job):
        return 0
    return int(job.meta.get("attempts") or 0) + 1


__all__ = ["checkpoint_step", "made_progress", "next_attempts", "START_KEY"]
