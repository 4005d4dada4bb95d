"""``control/requests/*.json`` and ``.stop``: how a person steers the daemon. Stdlib only.

One file per request, written by ``training_controller.py`` (``trainingd.cli.controller``) with
``atomic_ops.atomic_write_json`` under the name ``<created_ns, 20 digits>-<action>-<id>.json``, so name
order is creation order::

    {"id": "c7f3a1e2b4d5",        # 12 hex digits; the acknowledgement carries the same id
     "action": "pause",           # pause | resume | stop | skip
     "created_at": 1764470000.12} # seconds since the epoch (float)

The daemon reads the folder in name order every tick (``read_requests``), applies each request to its intent
and deletes the file (``consume``). When it has taken effect it is acknowledged in the status file
(``control.last_ack`` and ``control.acks``; see ``contracts.status``); ``--wait`` polls for that. A file that
cannot be parsed is returned with action ``invalid`` so the daemon drops it instead of retrying it forever.

``.stop`` at the root of the home is the emergency stop: the same as a ``stop`` request. Both the daemon and
the trainer watch it (``is_emergency_stop``); the daemon removes it once it has stopped.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from trainingd.atomic_ops import atomic_write_json, read_json
from trainingd.paths import Home

ACTIONS = ("pause", "resume", "stop", "skip")


@dataclass(frozen=True)
class Request:
    id: str
    action: str  # one of ACTIONS, or "invalid" for a file that could not be parsed
    created_at: float  # seconds since the epoch
    path: Path


def write_request(home: Home, action: str) -> Request:
    """Queue a control request for the daemon; returns it (its id is what the ack will carry)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown control action {action!r}; expected one of {', '.join(ACTIONS)}")
    req_id = uuid.uuid4().hex[:12]
    now = time.time()
    path = home.control_requests / f"{time.time_ns():020d}-{action}-{req_id}.json"
    atomic_write_json(path, {"id": req_id, "action": action, "created_at": now}, point="control")
    return Request(req_id, action, now, path)


def read_requests(home: Home) -> list[Request]:
    """Pending requests, oldest first. A malformed file comes back as action ``invalid``: dropped, not retried."""
    out: list[Request] = []
    folder = home.control_requests
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            data = read_json(path) or {}
            out.append(Request(str(data["id"]), str(data["action"]), float(data.get("created_at", 0)), path))
        except (ValueError, KeyError, TypeError, OSError):
            out.append(Request(path.stem, "invalid", 0.0, path))
    return out


def consume(request: Request) -> None:
    """Delete a request file once it has been applied to the daemon's intent."""
    request.path.unlink(missing_ok=True)


def is_emergency_stop(home: Home) -> bool:
    """True while ``.stop`` exists at the root of the home."""
    return home.emergency_stop.exists()


def clear_emergency_stop(home: Home) -> None:
    home.emergency_stop.unlink(missing_ok=True)
