"""Which job the daemon trains next, and what becomes of one that cannot start.

    job = next_job(queue, resume_first)       # an interrupted job first, then the head of the pending queues
    if complete_if_duplicate(home, queue, cfg, job): ...   # its content is in the live model already

Invariant 3: at most one job is in processing/; a job that is there is the daemon's and goes before any claim.
A job whose trainer cannot start for a reason of its own is counted as an attempt, never retried in a loop.
"""

from __future__ import annotations

import logging
from typing import Callable

from trainingd.config import Config
from trainingd.contracts.status import append_history
from trainingd.daemon.containment import printable
from trainingd.jobqueue import Job, JobQueue, QueueError
from trainingd.lifecycle.ancestry import find_trained
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.loop")

OnError = Callable[[str, str | None], None]  # (message, job id): the daemon's last_error and log


def next_job(queue: JobQueue, resume_first: list[str]) -> Job | None:
    """The job to train next (taken off ``resume_first``), claimed from pending when none waits in processing/."""
    while resume_first:
        job_id = resume_first.pop(0)
        try:
            job = queue.get(job_id)
        except QueueError:
            continue
        if job.state == "processing":
            return job
    for job in queue.jobs(["processing"]):
        # Left there by an I/O error right after a claim's rename: it is ours and goes first (never two).
        return job
    return queue.claim_next()


def fail_broken(home: Home, queue: JobQueue, job: Job, broken: str, on_error: OnError) -> None:
    """A job whose job.json could not be read is failed with the way to fix it; its data file is kept."""
    reason = (f"{broken}\nThe data file is kept in this folder. Fix or delete job.json "
              f"(the unreadable one is kept as job.json.broken), then: training_queue.py retry {job.id}")
    queue.fail(job, reason)
    on_error(f"job {job.id}: {broken}", job.id)
    append_history(home, job_id=job.id, file=job.meta.get("original_name"), state="failed",
                   result="bad_job_json", reason=reason, summary={})


def complete_if_duplicate(home: Home, queue: JobQueue, cfg: Config, job: Job) -> bool:
    """Dedupe: a job whose content is already in the live model (its adapter or a consolidated base below it,
    ``trainingd.lifecycle.ancestry``) goes straight to done/."""
    sha = job.meta.get("sha256")
    if not cfg.dedupe or job.meta.get("force") or not sha:
        return False
    hit = find_trained(home, sha, base_model=cfg.base_model, exclude_job=job.id)
    if hit is None:
        return False
    earlier = hit.get("job_id")
    log.info("job %s is a duplicate of job %s (same sha256, trained into the %s); not trained again", job.id,
             earlier, hit.get("where"))
    queue.complete(job, duplicate_of=earlier, result={"duplicate_of": earlier})
    append_history(home, job_id=job.id, file=job.meta.get("original_name"), state="done",
                   result="duplicate", reason=f"duplicate of {earlier}", summary={})
    return True


def start_failed(home: Home, queue: JobQueue, cfg: Config, job: Job, e: Exception, on_error: OnError) -> bool:
    """The trainer of ``job`` could not be started for a reason that is not the home's (not an OSError):
    counted as an attempt, so a job that can never start is failed instead of blocking the queue. True: failed."""
    log.error("job %s: the trainer could not be started", job.id, exc_info=e)
    attempts = int(job.meta.get("attempts") or 0) + 1
    what = f"the trainer could not be started: {type(e).__name__}: {printable(str(e))}"
    if attempts >= cfg.max_attempts:
        reason = (f"{what} ({attempts} attempts); giving up.\nThe traceback is in logs/daemon.log. Fix the "
                  f"cause, then: training_queue.py retry {job.id}")
        queue.fail(job, reason, attempts=attempts)
        on_error(f"job {job.id} failed: {what}", job.id)
        append_history(home, job_id=job.id, file=printable(str(job.meta.get("original_name"))),
                       state="failed", result="start_failed", reason=reason, summary={})
        return True
    queue.requeue(job, attempts=attempts)
    on_error(f"job {job.id}: {what} (attempt {attempts} of {cfg.max_attempts})", job.id)
    return False


def put_back(queue: JobQueue, job: Job, resume_first: list[str]) -> None:
    """A claimed job whose trainer could not be started goes back to the head of its queue."""
    try:
        queue.requeue(job)
    except Exception as e:  # noqa: BLE001 - still in processing/: take it first next time, claim no other
        log.error("job %s could not be put back into pending (%s); it is retried first", job.id, e)
        if job.id not in resume_first:
            resume_first.insert(0, job.id)
