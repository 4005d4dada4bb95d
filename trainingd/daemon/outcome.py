"""What a trainer's exit means for its job: a pure decision, exit code and facts in, an ``Outcome`` out.

The daemon gathers the facts (``Facts``, ``trainer_exit.exit_facts``), calls ``decide`` and carries the outcome out
in ``Daemon.apply_outcome`` (the queue transition: ``trainer_exit.move_job``);
nothing here touches a file, so every branch is tested as a table in ``tests/test_outcome.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainingd import exit_codes as ec

SKIP_REASON = "skipped by user request; adapter changes discarded"

# Codes the trainer returns when the job itself is wrong: a skip does not override them.
JOB_ERRORS = (ec.DATA_ERROR, ec.CHECKPOINT_MISMATCH, ec.USAGE)
# Codes whose meaning needs nothing from the training log.
_NAMED = (ec.OK, ec.ADAPTER_MISMATCH, ec.SKIPPED, ec.STOPPED, ec.CONFIG_ERROR) + JOB_ERRORS


@dataclass(frozen=True)
class Facts:
    """Everything the decision reads. The log facts are only gathered when ``needs_log`` says they matter."""

    code: int
    job_id: str
    reason: str                    # the trainer's reason (result.json's reason + details, or a pointer to the log)
    skip_wanted: bool = False
    stopping: bool = False         # the daemon is stopping
    ended_by_us: bool = False      # the stop ladder sent the trainer a stop or SIGTERM
    attempts: int = 0              # attempts counted before this one
    progressed: bool = False       # the job's checkpoint advanced while this trainer ran (daemon.attempts)
    max_attempts: int = 3
    machines_missing: bool = False  # a launched group gave up waiting for its machines
    disk_full: bool = False
    log_tail: str = ""
    join_timeout_s: float = 0.0
    home: str = ""
    gate_outcome: str | None = None  # ok: the gate's decision ("promoted" | "rejected"); None: no gate
    gate_reason: str | None = None


@dataclass(frozen=True)
class Outcome:
    """What to do with the job. ``state``: done | failed | pending (back to the head of its queue)."""

    state: str
    result: str | None = None             # the history line's result; None: no history line, the job goes on
    reason: str | None = None             # failed/ reason and the history line's reason
    attempts: int | None = None           # an attempt counted: the new total, recorded with the transition
    keep_result: bool = False             # record the trainer's result document with the failure
    retire_checkpoints: bool = False
    acks: tuple[tuple[str, str], ...] = ()  # (action, result) for every pending request of that action
    error: str | None = None              # the status's last_error
    snapshot_and_evaluate: bool = False   # the follow-ups of a finished job
    stop_for_config: bool = False         # the daemon stops with exit code CONFIG_ERROR
    condition: str | None = None          # a condition of the whole home ("adapter_mismatch") with ``error``
    disk_full: str | None = None          # raise ENOSPC with this message (the loop backs off)
    note: str | None = None               # an info line for the log
    gate_rejected: bool = False           # done, but the gate kept the candidate as a snapshot: nothing published


def needs_log(code: int, skip_wanted: bool, stopping: bool, ended_by_us: bool) -> bool:
    """Whether ``decide`` reads the log facts for this exit (the daemon reads the log only then)."""
    if code in _NAMED or (skip_wanted and code not in JOB_ERRORS):
        return False
    return not (stopping and ended_by_us)


def is_disk_full(result: dict, log_tail: str) -> bool:
    """True when the trainer ended on a full disk (its result's errno, else its traceback in the log)."""
    details = result.get("details") if isinstance(result, dict) else None
    if any(isinstance(d, dict) and d.get("errno") in ("ENOSPC", "EDQUOT") for d in details or []):
        return True
    return "No space left on device" in log_tail or "Disk quota exceeded" in log_tail


def decide(f: Facts) -> Outcome:
    """The outcome of one trainer exit; the order of the checks is the precedence."""
    name = ec.name_of(f.code)
    config_refused = f"trainer refused the configuration: {f.reason}"
    if f.code == ec.OK:
        acks = (("skip", "too late: the job had already finished"),) if f.skip_wanted else ()
        if f.gate_outcome == "rejected":
            # Trained, judged worse than the live adapter and kept as a snapshot by the trainer: the job is done,
            # the live adapter unchanged (nothing to snapshot or evaluate).
            return Outcome("done", result="rejected", reason=f.gate_reason, gate_rejected=True, acks=acks,
                           note=f"job {f.job_id}: the gate rejected the candidate ({f.gate_reason}); kept as a "
                                "snapshot, the live adapter is unchanged")
        return Outcome("done", result="ok", snapshot_and_evaluate=True, acks=acks)
    if f.skip_wanted and f.code not in JOB_ERRORS:
        # The trainer ended (stopped, crashed, killed) before it honoured the skip: the skip still holds.
        ack = "skipped" if f.code == ec.SKIPPED else f"skipped (the trainer ended first: {name})"
        config = f.code == ec.CONFIG_ERROR
        return Outcome("failed", result="skipped", reason=SKIP_REASON, retire_checkpoints=True,
                       acks=(("skip", ack),), error=config_refused if config else None, stop_for_config=config)
    if f.code == ec.ADAPTER_MISMATCH:
        # A condition of the home, not of this job: it goes back to the head of its queue and nothing starts.
        return Outcome("pending", condition="adapter_mismatch",
                       error=f"{f.reason}: no job starts until this is resolved")
    if f.code in JOB_ERRORS:
        acks = (("skip", f"the job failed first ({name})"),) if f.skip_wanted else ()
        return Outcome("failed", result=name, reason=f.reason, keep_result=True, error=f.reason.splitlines()[0],
                       acks=acks)
    if f.code == ec.SKIPPED:
        return Outcome("failed", result=name, reason=SKIP_REASON, acks=(("skip", "skipped"),))
    if f.code == ec.STOPPED:
        note = None if f.stopping else f"job {f.job_id}: trainer stopped on its own; it stays at the head of the queue"
        return Outcome("pending", note=note)
    if f.code == ec.CONFIG_ERROR:
        return Outcome("pending", error=config_refused, stop_for_config=True)
    if f.stopping and f.ended_by_us:
        return Outcome("pending")  # we ended it on the stop ladder: not the job's fault
    if f.machines_missing:
        # A machine that is down is not the job's fault: back to the head of its queue, no attempt counted.
        # The next try waits join_timeout_s again, so the queue holds until the machine is back.
        return Outcome("pending", error=(
            f"job {f.job_id}: not every machine joined its process group within {f.join_timeout_s} s (start "
            f"trainingd node --home {f.home} --machine-rank R on each other machine); no attempt counted, "
            "it starts again"))
    if f.disk_full:
        # A condition of the home, not of the job: back to the head of its queue, no attempt counted,
        # and the loop backs off (the raised error) until there is room again.
        return Outcome("pending", disk_full=(
            f"the trainer of job {f.job_id} ran out of disk space ({name}); the job is back at the head of its "
            "queue. Free space in the home"))
    acks = (("skip", f"the trainer ended first ({name})"),) if f.skip_wanted else ()
    if f.progressed:
        # Killed (the OOM killer, a reboot) after it got further: it resumes from there; only failures with no
        # progress count, so a long job killed now and then still finishes.
        return Outcome("pending", attempts=0, acks=acks, error=(
            f"trainer {name} on job {f.job_id} after its checkpoint advanced; no attempt counted, it resumes "
            "from that checkpoint"))
    attempts = f.attempts + 1
    if attempts >= f.max_attempts:
        reason = (f"trainer failed {attempts} times (last: {name}); giving up.\n"
                  f"Last lines of logs/training_output.log:\n{f.log_tail}\n"
                  f"Fix the cause, then: training_queue.py retry {f.job_id}")
        return Outcome("failed", result=name, reason=reason, attempts=attempts, acks=acks,
                       error=f"job {f.job_id} failed after {attempts} attempts ({name})")
    return Outcome("pending", attempts=attempts, acks=acks, error=(
        f"trainer {name} on job {f.job_id} (attempt {attempts} of {f.max_attempts}); retrying"))


def reason_text(result: dict, name: str) -> str:
    """The trainer's reason from its result document, its details indented below; a pointer to the log if none."""
    reason = str(result.get("reason") or f"trainer exited {name} without a reason; see logs/training_output.log")
    details = result.get("details") or []
    if isinstance(details, list) and details:
        reason += "\n" + "\n".join(f"  {d}" if isinstance(d, str) else f"  {d!r}" for d in details)
    return reason
