"""``.trainer.json`` at the root of a home: which trainer process group this daemon runs. Stdlib only.

Written by the daemon (``trainingd.daemon.trainer_process.TrainerProcess.start``, ``write_trainer_record``,
atomically and durably) right after it spawns a trainer, before anything else happens, and removed once the
trainer has been waited for. Read by the next daemon at start (``end_orphan_trainer``): a trainer of a killed
daemon may still be running, and is ended before another starts::

    {"pid": 4242,                  # the trainer's process id
     "pgid": 4242,                 # its process group (its own session: the same number)
     "job_id": "000012-chat",
     "started_at": "2026-11-30T10:00:00Z",
     "daemon_pid": 4200,
     "machines": 1,                # > 1: the job's process group spans machines
     "trainer_args": ["--home", "/shared/home", "--job-id", "000012-chat", "--dataset", "...",
                      "--reason-file", "..."]}

Also read by ``trainingd node`` (``trainingd.daemon.node``) on the other machines of a multi-machine group: a new record
with ``machines > 1`` is a job it joins with the same ``trainer_args`` (and its own ``--parent-pid``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from trainingd.atomic_ops import atomic_write_json, read_json
from trainingd.paths import Home


@dataclass(frozen=True)
class TrainerRecord:
    pid: int
    pgid: int
    job_id: str
    started_at: str
    daemon_pid: int
    machines: int = 1
    trainer_args: tuple[str, ...] = ()


def write_trainer_record(home: Home, record: TrainerRecord) -> None:
    atomic_write_json(home.trainer_record, {**asdict(record), "trainer_args": list(record.trainer_args)})


def read_trainer_record(home: Home) -> TrainerRecord | None:
    """The record; None when there is none or it cannot be used (a torn or hand-edited file)."""
    try:
        data = read_json(home.trainer_record, None)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or isinstance(data.get("pid"), bool):
        return None
    pid = data["pid"]
    pgid = data.get("pgid")
    daemon_pid = data.get("daemon_pid")
    machines = data.get("machines")
    args = data.get("trainer_args")
    return TrainerRecord(pid=pid, pgid=pgid if isinstance(pgid, int) else pid, job_id=str(data.get("job_id") or ""),
                         started_at=str(data.get("started_at") or ""),
                         daemon_pid=daemon_pid if isinstance(daemon_pid, int) else 0,
                         machines=machines if isinstance(machines, int) and machines > 0 else 1,
                         trainer_args=tuple(str(a) for a in args) if isinstance(args, list) else ())


def clear_trainer_record(home: Home) -> None:
    home.trainer_record.unlink(missing_ok=True)
