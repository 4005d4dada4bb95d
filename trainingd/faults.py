"""Named fault points, stdlib only: every place a process of a home moves, writes or publishes something.

Tests and ``bench/chaos.py`` turn them on through the environment; unset, ``fault_point()`` is one dict
lookup that returns at once.

    TRAININGD_CRASH_AT=<point>:<n>[:all][,...]   SIGKILL this process at the n-th hit of <point>
                                                 (":all" also SIGKILLs the parent first: a daemon and its
                                                 trainer dying together, as in a power cut)
    TRAININGD_FAIL_AT=<point>:<n>:<ERRNO>[:<k>][,...]
                                                 raise OSError(ERRNO) at hits n .. n+k-1 of <point>
                                                 (ERRNO: ENOSPC, EIO, EDQUOT, EROFS; k defaults to 1)

A write point sits after the bytes are written and before they are made durable (fsync) and visible
(rename): a crash there leaves a temporary file behind, ENOSPC is a write that did not fit, EIO is a failed
fsync. Every caller treats the raised error exactly like the real one: the temporary file is removed and the
target keeps its last good content. Hits are counted per process; a process started by a crashed one gets
the same environment unless the starter removes it (``bench/chaos.py`` and ``tests/faults/`` do).

List the points from the shell::

    python3 -m trainingd.faults
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

CRASH_ENV = "TRAININGD_CRASH_AT"
FAIL_ENV = "TRAININGD_FAIL_AT"

# name -> (process, where exactly). The order is the life of a file.
POINTS: dict[str, tuple[str, str]] = {
    "intake": ("daemon/CLI", "a new job's file moved (or copied) into queue/.incoming/<id>/, job.json not written"),
    "intake_publish": ("daemon/CLI", "a new job assembled in queue/.incoming/<id>/, not yet renamed into pending/"),
    "job_meta": ("daemon/CLI", "a job.json written to its temporary file, not yet fsynced or renamed"),
    "claim": ("daemon", "job.json says processing, the folder is still in pending/"),
    "claimed": ("daemon", "the job folder renamed into processing/, no trainer started yet"),
    "trainer_spawn": ("daemon", "the trainer process started, .trainer.json not yet written"),
    "trainer_command": ("daemon", "control/trainer_command.json written to its temporary file, not renamed"),
    "control": ("controller CLI", "a control request written to its temporary file, not renamed"),
    "status": ("daemon", "status/training_status.json written to its temporary file, not renamed"),
    "step": ("trainer", "an optimizer step applied, before its checkpoint"),
    "checkpoint_save": ("trainer", "a checkpoint's files written into .tmp-step-*, not yet renamed or marked"),
    "checkpoint": ("trainer", "a checkpoint complete (marked, older ones pruned), training not yet continued"),
    "checkpoint_retire": ("trainer/daemon", "a checkpoint folder renamed to .retired-*, not yet removed"),
    "publish_file": ("trainer", "one adapter file replaced in current_model/, the next not yet"),
    "publish": ("trainer", "adapter files replaced in current_model/, adapter_state.json not yet written"),
    "complete": ("daemon", "job.json says done, the folder is still in processing/"),
    "completed": ("daemon", "the job folder renamed into done/, history not yet appended"),
    "requeue": ("daemon", "job.json says pending, the folder is still in processing/"),
    "requeued": ("daemon", "the job folder renamed back into pending/"),
    "fail": ("daemon/CLI", "reason.txt and job.json say failed, the folder is not yet in failed/"),
    "failed": ("daemon/CLI", "the job folder renamed into failed/"),
    "retry": ("CLI", "a failed job's job.json says pending, the folder is still in failed/"),
    "retried": ("CLI", "a failed job renamed back into pending/"),
    "remove": ("CLI", "a removed job's reason written, the folder is still in pending/"),
    "removed": ("CLI", "a removed job renamed into failed/"),
    "room_probe": ("daemon", "the probe file that tells whether a full disk has room again written, not fsynced"),
    "snapshot": ("daemon", "a snapshot of current_model/ written to its temporary folder, not yet renamed"),
    "consolidate": ("consolidation", "a merged model written to its temporary folder, not yet renamed"),
}

# Names that run in the trainer, so a crash there needs a real training to reach.
TRAINER_POINTS = ("step", "checkpoint_save", "checkpoint", "checkpoint_retire", "publish_file", "publish")

ERRNOS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO, "EDQUOT": errno.EDQUOT, "EROFS": errno.EROFS}


class FaultSpecError(ValueError):
    """A TRAININGD_CRASH_AT / TRAININGD_FAIL_AT value that names no point or cannot be parsed."""


def _parse(crash: str, fail: str) -> dict[str, list[tuple]]:
    plan: dict[str, list[tuple]] = {}
    for raw in filter(None, (s.strip() for s in crash.split(","))):
        parts = raw.split(":")
        if parts[0] not in POINTS or len(parts) > 3 or (len(parts) == 3 and parts[2] != "all"):
            raise FaultSpecError(f"{CRASH_ENV}={raw!r}: expected <point>:<n>[:all] with <point> one of "
                                 f"{', '.join(POINTS)}")
        n = _count(raw, parts[1] if len(parts) > 1 else "1")
        plan.setdefault(parts[0], []).append(("crash", n, n, len(parts) == 3))
    for raw in filter(None, (s.strip() for s in fail.split(","))):
        parts = raw.split(":")
        if parts[0] not in POINTS or len(parts) not in (3, 4) or parts[2] not in ERRNOS:
            raise FaultSpecError(f"{FAIL_ENV}={raw!r}: expected <point>:<n>:<{'|'.join(ERRNOS)}>[:<k>] with <point> "
                                 f"one of {', '.join(POINTS)}")
        n = _count(raw, parts[1])
        k = _count(raw, parts[3]) if len(parts) == 4 else 1
        plan.setdefault(parts[0], []).append(("fail", n, n + k - 1, ERRNOS[parts[2]]))
    return plan


def _count(raw: str, text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise FaultSpecError(f"{raw!r}: counts start at 1")
    return n


_plan = _parse(os.environ.get(CRASH_ENV, ""), os.environ.get(FAIL_ENV, ""))
_hits: dict[str, int] = {}


def reload() -> None:
    """Read the environment again and reset the hit counts (for a test that changes it in-process)."""
    global _plan
    _plan = _parse(os.environ.get(CRASH_ENV, ""), os.environ.get(FAIL_ENV, ""))
    _hits.clear()


def fault_point(point: str) -> None:
    """Crash or fail here when the environment asks for it; otherwise do nothing."""
    if not _plan:
        return
    if point not in POINTS:
        raise FaultSpecError(f"unknown fault point {point!r}; add it to trainingd.faults.POINTS")
    actions = _plan.get(point)
    if not actions:
        return
    hit = _hits[point] = _hits.get(point, 0) + 1
    for kind, first, last, arg in actions:
        if not first <= hit <= last:
            continue
        if kind == "crash":
            log.warning("fault point %s:%d reached: killing this process%s", point, hit,
                        " and its parent" if arg else "")
            logging.shutdown()
            if arg:
                os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)
        code = arg
        log.warning("fault point %s:%d: injecting %s", point, hit, errno.errorcode[code])
        raise OSError(code, f"{os.strerror(code)} (injected at fault point {point}:{hit})")


def without_faults(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the fault variables removed (for a process that must run clean)."""
    return {k: v for k, v in env.items() if k not in (CRASH_ENV, FAIL_ENV)}


def main() -> int:
    width = max(map(len, POINTS))
    for name, (proc, where) in POINTS.items():
        sys.stdout.write(f"{name:<{width}}  {proc:<15} {where}\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
