"""Steering a running daemon from the shell: handlers that return dicts (the CLI formats them).

    python3 training_controller.py status [--json | --watch] [--home DIR]
    python3 training_controller.py pause|resume|stop|skip [--wait [--timeout S]] [--home DIR]

A request is a file written with ``trainingd.contracts.requests.write_request``; the daemon applies it and
acknowledges it in ``status/training_status.json`` (``control.acks``). "Running" means the daemon holds
the flock on ``.daemon.lock``, not that a pid is alive (ARCHITECTURE.md, invariant 3).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from trainingd.contracts.requests import ACTIONS, write_request
from trainingd.contracts.status import read_status
from trainingd.exit_codes import ERROR, OK, TIMEOUT
from trainingd.instance import is_daemon_running
from trainingd.paths import Home
from trainingd.jobqueue import JobQueue

log = logging.getLogger(__name__)

DEFAULT_WAIT_TIMEOUT_S = 300.0


def find_ack(status: dict[str, Any] | None, request_id: str) -> dict[str, Any] | None:
    """The acknowledgement of ``request_id`` in a status view, if the daemon has written it."""
    if not status:
        return None
    control = status.get("control") or {}
    acks = list(control.get("acks") or [])
    if control.get("last_ack"):
        acks.append(control["last_ack"])
    for ack in acks:
        if isinstance(ack, dict) and ack.get("id") == request_id:
            return ack
    return None


# done/ keeps a folder per job for ever: the status shows the newest finished jobs, and counts them all.
RECENT_FINISHED = 20


def status_jobs(queue: JobQueue) -> list[dict[str, Any]]:
    """The jobs the status shows, as plain dicts: every pending job (in claim order) and the running one, then the
    newest ``RECENT_FINISHED`` done and failed jobs (oldest first), reading no other job.json."""
    jobs = queue.jobs(["pending", "processing"])
    for state in ("done", "failed"):
        jobs += reversed(queue.page(state, 0, RECENT_FINISHED, newest_first=True)[1])
    return [job_dict(job) for job in jobs]


def job_dict(job: Any) -> dict[str, Any]:
    """A job as shown by the CLIs: its metadata plus where it is."""
    meta = dict(job.meta)
    meta.update({"id": job.id, "state": job.state, "priority": job.priority, "dir": str(job.dir)})
    return meta


def status_summary(home: Home) -> dict[str, Any]:
    """``{"status": {...} | None, "queue": [...jobs], "counts": {...}, "daemon_running": bool, "home": str}``:
    ``queue`` as ``status_jobs`` lists it, ``counts`` every job of each state (``JobQueue.counts``)."""
    queue = JobQueue(home)
    try:
        jobs, counts = status_jobs(queue), queue.counts()
    except OSError as e:
        log.warning("cannot list the queue of %s: %s", home.root, e)
        jobs, counts = [], None
    return {
        "status": read_status(home),
        "queue": jobs,
        "counts": counts,
        "daemon_running": is_daemon_running(home),
        "home": str(home.root),
    }


def send_request(
    home: Home,
    action: str,
    *,
    wait: bool = False,
    timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
    poll_interval_s: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Write a control request and optionally wait for its acknowledgement.

    Returns ``{"ok", "exit_code", "action", "id", "acked", "ack", "message"}``. With no daemon running
    nothing is written: a request left behind would fire at the next start, long after the user asked
    (exit 1; for ``stop`` the wish is already true, exit 0).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    result: dict[str, Any] = {"action": action, "id": None, "acked": False, "ack": None, "home": str(home.root)}
    if not is_daemon_running(home):
        if action == "stop":
            return {**result, "ok": True, "exit_code": OK,
                    "message": f"no daemon running for {home.root}: nothing to stop"}
        return {**result, "ok": False, "exit_code": ERROR, "message": f"no daemon running for {home.root}"}

    request = write_request(home, action)
    result["id"] = request.id
    log.info("wrote %s request %s to %s", action, request.id, request.path)
    if not wait:
        return {**result, "ok": True, "exit_code": OK, "message": f"{action} requested (id {request.id})"}
    return _wait_for_ack(home, result, timeout_s, poll_interval_s, sleep)


def _wait_for_ack(home: Home, result: dict[str, Any], timeout_s: float, poll_interval_s: float,
                  sleep: Callable[[float], None]) -> dict[str, Any]:
    request_id, action = result["id"], result["action"]
    deadline = time.monotonic() + timeout_s
    while True:
        ack = find_ack(read_status(home), request_id)
        if ack is not None:
            outcome = ack.get("result") or "done"
            return {**result, "ok": True, "exit_code": OK, "acked": True, "ack": ack,
                    "message": f"{action} acknowledged (id {request_id}): {outcome}"}
        if not is_daemon_running(home):
            # The daemon writes its final status (carrying a stop's ack) before it releases the lock:
            # one more read settles whether it acknowledged on the way out.
            ack = find_ack(read_status(home), request_id)
            if ack is not None:
                continue
            return {**result, "ok": False, "exit_code": ERROR,
                    "message": f"daemon for {home.root} exited before acknowledging {action} (id {request_id})"}
        if time.monotonic() >= deadline:
            return {**result, "ok": False, "exit_code": TIMEOUT,
                    "message": f"timed out after {timeout_s:g} s waiting for the daemon to acknowledge "
                               f"{action} (id {request_id}); the request stays queued"}
        sleep(poll_interval_s)
