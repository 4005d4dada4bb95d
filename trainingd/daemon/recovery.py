"""Start-up recovery: what a daemon finds that the last one (killed, crashed, or ended with the machine) left behind.

    tidy_after_last_run(home, queue, cfg, faults)           # .incoming, a stale command or .stop, an orphan trainer
    resume_first = settle_processing(home, queue, cfg, on_error)

A job found in ``queue/processing/`` (invariant 4) is completed when its outcome is already durable (published into
the live adapter, or rejected by the gate with its snapshot kept), failed when the daemon ended too often while it
trained with no checkpoint in between, and otherwise resumed before any other job.
"""

from __future__ import annotations

import logging
from typing import Callable

from trainingd.checks.invariants import sweep_temp_files
from trainingd.config import Config
from trainingd.contracts.checkpoint import remove_checkpoints
from trainingd.contracts.requests import clear_emergency_stop, is_emergency_stop
from trainingd.contracts.status import append_history
from trainingd.contracts.trainer_command import clear_trainer_command
from trainingd.daemon.attempts import checkpoint_step, next_attempts
from trainingd.daemon.conditions import trained_entries
from trainingd.daemon.containment import Faults
from trainingd.daemon.trainer_process import end_orphan_trainer, tail
from trainingd.jobqueue import Job, JobQueue
from trainingd.lifecycle import gate, snapshots
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.loop")

OnError = Callable[[str, str | None], None]  # (message, job id): the daemon's last_error and log


def retire_checkpoints(home: Home, job: Job) -> None:
    """A skipped job's checkpoints are discarded, as the trainer does when it honours the skip."""
    remove_checkpoints(home.job_checkpoints(job.id))


def tidy_after_last_run(home: Home, queue: JobQueue, cfg: Config, faults: Faults) -> None:
    """Put back what an earlier run left half-done; nothing here touches a job in processing/."""
    queue.ensure_dirs()
    for job in queue.recover_incoming():
        log.info("recovered %s from queue/.incoming -> %s", job.id, job.state)
    clear_trainer_command(home)
    if is_emergency_stop(home):
        # A .stop left behind by a crashed daemon must not block every later start.
        log.warning("removing a stale .stop left by an earlier run")
        clear_emergency_stop(home)
    end_orphan_trainer(home, cfg.stop_grace_s)
    # What a kill left half-written (no process of this home writes them now); housekeeping, never fatal.
    faults.run("sweep", sweep_temp_files, home)


def settle_processing(home: Home, queue: JobQueue, cfg: Config, on_error: OnError) -> list[str]:
    """Complete, fail or keep each job found in processing/; returns the ids to resume before any other job."""
    resume_first: list[str] = []
    trained_ids = {t.get("job_id") for t in trained_entries(home)}
    rejected = snapshots.rejected_snapshots(home)
    for job in queue.jobs(["processing"]):
        if job.id in rejected and job.id not in trained_ids:
            complete_rejected(home, queue, job, rejected[job.id])
        elif job.id in trained_ids:
            complete_published(home, queue, cfg, job)
        elif keep_for_resume(home, queue, cfg, job, on_error):
            resume_first.append(job.id)
    return resume_first


def complete_rejected(home: Home, queue: JobQueue, job: Job, snapshot: str) -> None:
    """The gate kept the job's candidate as a snapshot before a crash: the job is done, nothing was published."""
    log.info("job %s was rejected by the gate before a crash (snapshot %s); completing it", job.id, snapshot)
    retire_checkpoints(home, job)
    queue.complete(job, result=job.meta.get("result") or {"recovered": True},
                   gate_outcome=gate.REJECTED, gate_snapshot=snapshot)
    append_history(home, job_id=job.id, file=job.meta.get("original_name"), state="done",
                   result=gate.REJECTED, reason=f"rejected by the gate (snapshot {snapshot})", summary={})


def complete_published(home: Home, queue: JobQueue, cfg: Config, job: Job) -> None:
    """The job is in the live adapter already: the crash came after the publish, before the move to done/."""
    log.info("job %s was published before a crash; completing it", job.id)
    retire_checkpoints(home, job)  # the trainer was killed before it removed them
    done = queue.complete(job, result=job.meta.get("result") or {"recovered": True})
    snapshots.after_job(home, done, job.meta.get("result"), cfg.to_dict(), cfg.keep_snapshots)
    append_history(home, job_id=job.id, file=job.meta.get("original_name"), state="done", result="ok", summary={})


def keep_for_resume(home: Home, queue: JobQueue, cfg: Config, job: Job, on_error: OnError) -> bool:
    """Count the interrupted training as an attempt; False when that gave up on the job (it is failed)."""
    # Counted as an attempt unless its checkpoint advanced meanwhile, so a trainer that takes its
    # daemon down with it cannot loop forever, while a long job killed now and then still finishes.
    attempts = next_attempts(home, job)
    if attempts >= cfg.max_attempts:
        reason = (f"the daemon ended {attempts} times in a row while this job was training, with no "
                  "new checkpoint in between; giving up.\n"
                  f"Last lines of logs/training_output.log:\n{tail(home.training_log)}\n"
                  f"Fix the cause, then: training_queue.py retry {job.id}")
        queue.fail(job, reason, attempts=attempts)
        on_error(f"job {job.id} failed after {attempts} attempts (daemon ended while training)", job.id)
        append_history(home, job_id=job.id, file=job.meta.get("original_name"), state="failed",
                       result="daemon_ended", reason=reason, summary={})
        return False
    queue.update_meta(job, attempts=attempts)
    log.info("job %s was being trained when the last daemon ended (%s); resuming it first", job.id,
             f"attempt {attempts} of {cfg.max_attempts}" if attempts else
             f"its checkpoint advanced to step {checkpoint_step(home, job.id)}: no attempt counted")
    return True
