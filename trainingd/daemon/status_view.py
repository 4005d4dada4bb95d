"""The daemon's status document: ``status/training_status.json`` is a view of the daemon and its queue (invariant 6).

    doc = status_doc(daemon, final=False)      # state and detail, the job, queue, eval, gate and liveness blocks
    StatusWriter(home).write(doc)

The queue folders are the truth; this only says what the daemon is doing about them, in the words a person needs.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

from trainingd import __version__
from trainingd.config import Config
from trainingd.contracts.checkpoint import ADAPTER_WEIGHTS
from trainingd.contracts.job import now_iso
from trainingd.contracts.progress import read_progress
from trainingd.contracts.status import compose_status, status_from_trainer
from trainingd.daemon.autogen import AutoGenerator
from trainingd.daemon.containment import Faults
from trainingd.daemon.control import ControlRequests
from trainingd.daemon.evaluation import Evaluator
from trainingd.daemon.trainer_process import TrainerProcess
from trainingd.jobqueue import JobQueue
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.loop")


class DaemonView(Protocol):
    """What the view reads of the daemon (``trainingd.daemon.loop.Daemon``), which it never changes."""

    home: Home
    cfg: Config
    queue: JobQueue
    running: TrainerProcess | None
    autogen: AutoGenerator
    evaluator: Evaluator
    faults: Faults
    liveness: Liveness
    started_at: str
    config_loaded_at: str
    config_reload_error: str | None
    held_by: dict | None
    gate_status: dict
    paused: bool
    stopping: bool
    stop_reason: str | None
    skip_requested: bool
    final_status: str
    final_detail: str | None
    requests: ControlRequests
    last_error: dict | None


def status_doc(d: DaemonView, *, final: bool = False) -> dict:
    """The whole status document; ``final``: the daemon is exiting with ``final_status``."""
    r = d.running
    progress = read_progress(d.home, r.job.id) if r is not None else None
    state, detail = state_of(d, progress, final=final)
    counts = d.queue.counts()
    if state == "idle" and r is None and counts.get("processing"):
        # A claimed job with no trainer (one that could not be started or put back, e.g. on a full disk) is
        # not "waiting for files": say so, with the error that holds it.
        stuck = ", ".join(j.id for j in d.queue.jobs(["processing"])) or "a job"
        why = (d.last_error or {}).get("message")
        state, detail = "error", (f"job {stuck} is in queue/processing/ with no trainer running"
                                  + (f": {why}" if why else "") + "; it is retried first")
    adapter = d.home.current_model / ADAPTER_WEIGHTS
    control = {**d.requests.block, "paused": d.paused, "stopping": d.stopping}
    doc = compose_status(
        daemon={"pid": os.getpid(), "version": __version__, "started_at": d.started_at,
                "home": str(d.home.root), "config_loaded_at": d.config_loaded_at,
                "config_reload_error": d.config_reload_error},
        status=state, status_detail=detail, job=job_block(r), progress=progress, queue=counts,
        model={"base": d.cfg.base_model, "adapter": str(adapter.parent) if adapter.exists() else None,
               "model_display_name": d.cfg.model_display_name},
        control=control, last_error=d.last_error)
    doc["condition"] = d.held_by
    doc["auto_generate"] = d.autogen.status()
    doc["eval"] = d.evaluator.status()
    doc["gate"] = d.gate_status
    doc["liveness"] = d.liveness.update(d.queue, idle=state == "idle", stall_after_s=d.cfg.stall_after_s)
    doc["faults"] = d.faults.status()
    return doc


def state_of(d: DaemonView, progress: dict | None, *, final: bool) -> tuple[str, str | None]:
    """The status and its detail, from what the daemon intends and what its trainer last said."""
    r = d.running
    if final:
        return d.final_status, d.final_detail
    if r is not None:
        state, detail = status_from_trainer(progress)
        machines = d.cfg.distributed.num_machines if r.launched else 1
        if progress is None and machines > 1:  # the launcher waits until every machine has joined
            detail = (f"starting the trainer: waiting for all {machines} machines to join (each other machine "
                      f"runs trainingd node --home {d.home.root} --machine-rank R)")
        if d.stopping:
            state, detail = "stopping", f"waiting for the trainer to checkpoint ({d.stop_reason})"
        elif d.skip_requested:
            detail = "skipping the current job"
        elif d.paused and state != "paused":
            detail = "pausing at the next step"
        return state, detail
    if d.stopping:
        return "stopping", d.stop_reason
    if d.paused:
        return "paused", "no job will start until resume"
    if d.held_by is not None:
        return "paused", d.held_by["message"] + ". Ways out: " + "; ".join(d.held_by["ways_out"])
    if d.evaluator.proc is not None:
        return "evaluating", f"held-out evaluation of the adapter after job {d.evaluator.job_id}"
    return "idle", "waiting for files in inbox/"


def job_block(r: TrainerProcess | None) -> dict | None:
    """The status's ``job``: the job the running trainer trains, None when none runs."""
    if r is None:
        return None
    m = r.job.meta
    return {"id": r.job.id, "file": m.get("original_name"), "sha256": m.get("sha256"),
            "priority": r.job.priority, "started_at": r.started_at}


class Liveness:
    """Has the head of the queue moved? A head that sits while the daemon is idle for ``stall_after_s`` is a stuck
    queue (the status's ``liveness``; the doctor and ``state_tracker.py --check`` report it), whatever the cause."""

    def __init__(self) -> None:
        self.head: str | None = None
        self.since_mono = time.monotonic()
        self.since: str = now_iso()
        self.logged = False

    def update(self, queue: JobQueue, *, idle: bool, stall_after_s: float) -> dict[str, Any]:
        try:
            _, first = queue.page("pending", 0, 1)
            head = first[0].id if first else None
        except Exception:  # noqa: BLE001 - the queue's own fault is reported by the queue subsystem
            head = self.head
        if head != self.head or not idle or head is None:
            if self.logged and head is not None:
                log.info("the head of the queue moves again")
            self.head, self.since_mono, self.since, self.logged = (head if idle else None), time.monotonic(), \
                now_iso(), False
        waited = time.monotonic() - self.since_mono
        stalled = idle and self.head is not None and waited >= stall_after_s
        problem = fix = None
        if stalled:
            problem = (f"the head of the queue (job {self.head}) has not moved for {waited:.0f} s while the "
                       "daemon is idle")
            fix = ("see faults and last_error in status/training_status.json and logs/daemon.log; fix what they "
                   "name (the job starts by itself), or fail the job: training_queue.py remove "
                   f"{self.head}")
            if not self.logged:
                log.error("%s; %s", problem, fix)
                self.logged = True
        return {"head": self.head, "head_since": self.since if self.head else None, "stalled": stalled,
                "stall_after_s": stall_after_s, "problem": problem, "fix": fix}
