"""A trainer's exit on the daemon's side: the facts ``outcome.decide`` reads, and the queue transition it chose.

    facts = exit_facts(home, cfg, r, code, result, summary, skip_wanted=..., stopping=...)
    o = decide(facts)                                           # trainingd.daemon.outcome: pure
    ended = move_job(home, queue, cfg, r.job, o, result=result, summary=summary, seconds=seconds)

What the outcome changes in the daemon itself (its condition, acknowledgements, a stop) is ``Daemon.apply_outcome``.
"""

from __future__ import annotations

from typing import Any

from trainingd import exit_codes as ec
from trainingd.config import Config
from trainingd.contracts.status import append_history
from trainingd.daemon.attempts import made_progress
from trainingd.daemon.outcome import Facts, Outcome, is_disk_full, needs_log, reason_text
from trainingd.daemon.recovery import retire_checkpoints
from trainingd.daemon.trainer_process import TrainerProcess, machines_missing, tail
from trainingd.jobqueue import Job, JobQueue
from trainingd.lifecycle import gate, snapshots
from trainingd.paths import Home


def exit_facts(home: Home, cfg: Config, r: TrainerProcess, code: int, result: dict, summary: dict, *,
               skip_wanted: bool, stopping: bool) -> Facts:
    """Everything the decision on this exit reads; the training log only when the exit code leaves it open."""
    job = r.job
    ended_by_us = r.term_sent_at is not None or r.stop_sent_at is not None
    gate_decision = summary.get("gate") if isinstance(summary.get("gate"), dict) else {}
    log_facts: dict[str, Any] = {}
    if needs_log(code, skip_wanted, stopping, ended_by_us):
        short_tail = tail(home.training_log, lines=15)
        log_facts = {"machines_missing": r.launched and machines_missing(short_tail),
                     "disk_full": is_disk_full(result, short_tail), "log_tail": tail(home.training_log)}
    return Facts(code=code, job_id=job.id, reason=reason_text(result, ec.name_of(code)), skip_wanted=skip_wanted,
                 stopping=stopping, ended_by_us=ended_by_us, attempts=int(job.meta.get("attempts") or 0),
                 progressed=made_progress(home, job),
                 max_attempts=cfg.max_attempts, join_timeout_s=cfg.distributed.join_timeout_s,
                 home=str(home.root), gate_outcome=gate_decision.get("outcome"),
                 gate_reason=gate_decision.get("reason"), **log_facts)


def move_job(home: Home, queue: JobQueue, cfg: Config, job: Job, o: Outcome, *, result: dict, summary: dict,
             seconds: float) -> bool:
    """The outcome's queue transition, then its checkpoints and history line. True: the job ended (a history line)."""
    attempts = {} if o.attempts is None else {"attempts": o.attempts}
    gate_decision = summary.get("gate") if isinstance(summary.get("gate"), dict) else None
    if o.state == "done" and o.gate_rejected:
        queue.complete(job, result=summary, gate_outcome=gate.REJECTED,
                       gate_snapshot=(gate_decision or {}).get("snapshot"))
        snapshots.prune_rejected(home, cfg.keep_rejected)
    elif o.state == "done":
        done = queue.complete(job, result=summary,
                              **({"gate_outcome": gate_decision.get("outcome")} if gate_decision else {}))
        snapshots.after_job(home, done, summary, cfg.to_dict(), cfg.keep_snapshots)
    elif o.state == "failed":
        queue.fail(job, o.reason or "", **({"result": result or None} if o.keep_result else {}), **attempts)
    else:
        queue.requeue(job, **attempts)
    if o.retire_checkpoints:
        retire_checkpoints(home, job)
    if o.result is None:
        return False
    append_history(home, job_id=job.id, file=job.meta.get("original_name"), state=o.state,
                   result=o.result, reason=o.reason, summary=summary, seconds=seconds)
    return True
