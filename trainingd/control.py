"""Control requests: how the controller CLI steers the daemon, and how the daemon steers its trainer.

Wire format (all files written atomically, JSON):

1. ``control/requests/<created_ns>-<action>-<id>.json`` -- one file per user request, written by
   ``training_controller.py``::

       {"id": "c7f3a1e2b4d5", "action": "pause", "created_at": 1764470000.12}

   ``action`` is one of ``pause``, ``resume``, ``stop``, ``skip``. The daemon reads the folder in name
   order every tick, applies each request to its intent and deletes the file. When the request has taken
   effect it is acknowledged in the status file (``control.last_ack`` and ``control.acks``) with the same
   id; ``--wait`` polls for that. A second ``pause`` is acknowledged and changes nothing.

2. ``.stop`` at the root of the home -- the emergency stop: same as a ``stop`` request. Both the daemon and
   the trainer watch it; the daemon removes it once it has stopped.

3. ``control/trainer_command.json`` -- the daemon's standing order to the running trainer::

       {"job_id": "...", "action": "run", "seq": 3, "updated_at": 1764470000.5, "config": {...}}

   ``config`` is the configuration the daemon holds (config.json as of its start or its last SIGHUP
   reload); the trainer of that job trains with it, so a config.json edited but not yet reloaded, or
   refused at reload, never reaches a trainer.

   ``action`` is ``run``, ``pause``, ``stop`` or ``skip``. The trainer reads it at every optimizer-step
   boundary (a stat, and a read only when it changed): ``pause`` keeps the model loaded and waits,
   ``stop`` writes a checkpoint and exits STOPPED, ``skip`` discards the job's checkpoints and exits
   SKIPPED without touching current_model/. An order naming another job is ignored.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .atomic_ops import atomic_write_json, read_json
from .paths import Home

ACTIONS = ("pause", "resume", "stop", "skip")
TRAINER_ACTIONS = ("run", "pause", "stop", "skip")


@dataclass(frozen=True)
class Request:
    id: str
    action: str
    created_at: float
    path: Path


def write_request(home: Home, action: str) -> Request:
    """Queue a control request for the daemon; returns it (its id is what the ack will carry)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown control action {action!r}; expected one of {', '.join(ACTIONS)}")
    req_id = uuid.uuid4().hex[:12]
    now = time.time()
    path = home.control_requests / f"{time.time_ns():020d}-{action}-{req_id}.json"
    atomic_write_json(path, {"id": req_id, "action": action, "created_at": now})
    return Request(req_id, action, now, path)


def read_requests(home: Home) -> list[Request]:
    """Pending requests, oldest first. A malformed file is returned as action ``invalid`` so it is dropped, not retried."""
    out = []
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
    return home.emergency_stop.exists()


def write_trainer_command(home: Home, job_id: str, action: str, seq: int, config: dict | None = None) -> None:
    if action not in TRAINER_ACTIONS:
        raise ValueError(f"unknown trainer action {action!r}")
    doc = {"job_id": job_id, "action": action, "seq": seq, "updated_at": time.time()}
    if config is not None:
        doc["config"] = config
    atomic_write_json(home.trainer_command, doc)


def read_trainer_command(home: Home) -> dict:
    """The standing order (``{}`` when there is none or it cannot be read)."""
    try:
        data = read_json(home.trainer_command, {})
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class TrainerCommandReader:
    """What the trainer uses at each step boundary: re-reads the order file only when its mtime changes."""

    def __init__(self, home: Home, job_id: str):
        self.home = home
        self.job_id = job_id
        self._mtime_ns: int | None = None
        self._action = "run"

    def action(self) -> str:
        """``run``, ``pause``, ``stop`` or ``skip`` for this job (``.stop`` at the home root means ``stop``)."""
        if is_emergency_stop(self.home):
            return "stop"
        try:
            mtime = os.stat(self.home.trainer_command).st_mtime_ns
        except FileNotFoundError:
            return self._action
        if mtime != self._mtime_ns:
            self._mtime_ns = mtime
            data = read_json(self.home.trainer_command, {}) or {}
            if data.get("job_id") == self.job_id and data.get("action") in TRAINER_ACTIONS:
                self._action = data["action"]
        return self._action
