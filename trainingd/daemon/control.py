"""Control requests on the daemon's side: which may take effect, which wait for it, and their acknowledgements.

    requests = ControlRequests(home, previous_status, started_wall)
    for req in requests.admitted():           # rejected, invalid, unknown and stale ones are answered or dropped
        ...                                   # the daemon records the intent, then requests.pending.append(req)
    requests.ack_all("pause", "paused")       # once the trainer (or the idle loop) has done it

A request is acknowledged when it has taken effect, not when it is read, so ``--wait`` means "done". The status's
``control`` block is ``block`` (last_request, last_ack, the last ``MAX_ACKS`` acks).
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

from trainingd.contracts.job import now_iso
from trainingd.contracts.requests import ACTIONS as REQUEST_ACTIONS
from trainingd.contracts.requests import Request, consume, read_requests
from trainingd.contracts.status import empty_control
from trainingd.daemon.containment import printable
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.loop")

MAX_ACKS = 20


class ControlRequests:
    """The requests waiting to take effect and the status's ``control`` block of what was asked and answered."""

    def __init__(self, home: Home, previous: dict, started_wall: float):
        self.home = home
        self.started_wall = started_wall  # requests written before this are stale
        self.pending: list[Request] = []  # requests waiting to take effect before they are acknowledged
        prev_control = previous.get("control") if isinstance(previous.get("control"), dict) else {}
        # Acks outlive a restart so `--wait` on a stop finds its answer; pause state does not.
        self.block: dict[str, Any] = {
            **empty_control(),
            "last_request": prev_control.get("last_request"),
            "last_ack": prev_control.get("last_ack"),
            "acks": list(prev_control.get("acks") or [])[-MAX_ACKS:],
        }

    def admitted(self) -> Iterator[Request]:
        """Each new request that may take effect, in the order written; the others are answered or dropped here."""
        for req in read_requests(self.home):
            kept = consume(req)
            if req.action == "rejected":
                log.warning("control/requests/%s is %s: set aside as %s (never opened)", printable(req.path.name),
                            req.reason, printable(str(kept.relative_to(self.home.root))) if kept else "nothing")
                continue
            if req.action == "invalid":
                log.warning("dropped an invalid control request file %s", printable(req.path.name))
                continue
            if req.action not in REQUEST_ACTIONS:
                # Answered, so a writer waiting for its id is told instead of timing out.
                self.ack(req, f"refused: unknown action {req.action!r}; expected one of {', '.join(REQUEST_ACTIONS)}")
                continue
            if req.created_at < self.started_wall:
                # Written for an earlier daemon (e.g. just as it exited): answered, never applied.
                log.warning("control request %s (%s) was written before this daemon started; not applied",
                            req.id, req.action)
                self.ack(req, "stale: written before this daemon started; not applied")
                continue
            log.info("control request %s: %s", req.id, req.action)
            self.block["last_request"] = {"id": req.id, "action": req.action, "at": now_iso()}
            yield req

    def ack(self, req: Request, result: str) -> None:
        entry = {"id": req.id, "action": req.action, "result": result, "at": now_iso()}
        self.block["last_ack"] = entry
        self.block["acks"] = (self.block["acks"] + [entry])[-MAX_ACKS:]
        if req in self.pending:
            self.pending.remove(req)
        log.info("control request %s (%s) acknowledged: %s", req.id, req.action, result)

    def ack_all(self, action: str, result: str) -> None:
        """Answer every pending request of ``action`` (it took effect, or a later request superseded it)."""
        for req in [r for r in self.pending if r.action == action]:
            self.ack(req, result)
