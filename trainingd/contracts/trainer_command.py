"""``control/trainer_command.json``: the daemon's standing order to the running trainer. Stdlib only.

Written only by the daemon (``write_trainer_command``, ``atomic_ops.atomic_write_json``) when it starts a job
and whenever its intent for that job changes; removed at daemon start. Read by the trainer: once at start for
its configuration, then at every optimizer-step boundary (``trainingd.train.commands.TrainerCommandReader``:
a stat, and a read only when the file changed)::

    {"job_id": "000012-chat",     # an order naming another job is ignored
     "action": "run",             # run | pause | stop | skip
     "seq": 3,                    # increases with every order of this daemon
     "updated_at": 1764470000.5,  # seconds since the epoch
     "config": {...}}             # config.json as the daemon holds it (as of its start or last SIGHUP reload)

``pause`` keeps the model loaded and waits, ``stop`` writes a checkpoint and exits STOPPED, ``skip`` discards
the job's checkpoints and exits SKIPPED without touching current_model/. The trainer of that job trains with
``config``, so a config.json edited but not yet reloaded, or refused at reload, never reaches a trainer.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from trainingd.atomic_ops import atomic_write_json, read_json
from trainingd.paths import Home

ACTIONS = ("run", "pause", "stop", "skip")


@dataclass(frozen=True)
class TrainerCommand:
    job_id: str
    action: str  # one of ACTIONS
    seq: int
    updated_at: float
    config: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"job_id": self.job_id, "action": self.action, "seq": self.seq,
                               "updated_at": self.updated_at}
        if self.config is not None:
            doc["config"] = self.config
        return doc


def write_trainer_command(home: Home, job_id: str, action: str, seq: int, config: dict | None = None) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown trainer action {action!r}")
    atomic_write_json(home.trainer_command, TrainerCommand(job_id, action, seq, time.time(), config).to_json(),
                      point="trainer_command")


def read_trainer_command(home: Home) -> TrainerCommand | None:
    """The standing order; None when there is none, or it cannot be read, or it is not a valid order."""
    try:
        data = read_json(home.trainer_command, None)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("action") not in ACTIONS or not isinstance(data.get("job_id"), str):
        return None
    config = data.get("config")
    try:
        return TrainerCommand(job_id=data["job_id"], action=data["action"], seq=int(data.get("seq") or 0),
                              updated_at=float(data.get("updated_at") or 0.0),
                              config=config if isinstance(config, dict) else None)
    except (TypeError, ValueError):
        return None


def trainer_command_stamp(home: Home) -> int | None:
    """The order file's mtime in ns (None when there is none): a reader re-reads only when it changes."""
    try:
        return os.stat(home.trainer_command).st_mtime_ns
    except FileNotFoundError:
        return None


def clear_trainer_command(home: Home) -> None:
    """Remove the order (daemon start: no trainer may act on an earlier daemon's order)."""
    home.trainer_command.unlink(missing_ok=True)
