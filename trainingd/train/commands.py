"""The trainer's side of steering: what the daemon (or ``.stop``) tells the running job to do.

The trainer asks ``TrainerCommandReader.action()`` at every optimizer-step boundary: a stat of
``control/trainer_command.json`` and a read only when it changed (the wire format is in
``trainingd.contracts.trainer_command``). Stdlib only.
"""

from __future__ import annotations

from trainingd.contracts.requests import is_emergency_stop
from trainingd.contracts.trainer_command import ACTIONS, read_trainer_command, trainer_command_stamp
from trainingd.paths import Home


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
        mtime = trainer_command_stamp(self.home)
        if mtime is None:
            return self._action
        if mtime != self._mtime_ns:
            self._mtime_ns = mtime
            order = read_trainer_command(self.home)
            if order is not None and order.job_id == self.job_id and order.action in ACTIONS:
                self._action = order.action
        return self._action
