"""The one trainer process group of a daemon: how it is started and signalled.

The trainer runs as ``python -m trainingd.train --home H --job-id ID --dataset FILE --reason-file
<job>/result.json --parent-pid <daemon>`` in its own session (so a signal to the group reaches every process it
starts, and a terminal's Ctrl-C does not), with the home as working directory and its output appended to
``logs/training_output.log``. What it is told to do goes through ``control/trainer_command.json``
(``trainingd.contracts.trainer_command``); signals are only the stop ladder's last rungs. Its pid and group are
recorded in ``.trainer.json`` (``trainingd.contracts.trainer_record``) so a later daemon can find it.

Set ``TRAININGD_TRAINER=/path/script.py`` to run that script instead of ``-m trainingd.train`` (same
arguments, same contract); useful for wrapping the trainer, e.g. under a profiler.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .contracts.job import now_iso
from .contracts.progress import clear_progress, read_progress
from .contracts.result import clear_result, result_path
from .contracts.trainer_record import TrainerRecord, clear_trainer_record, read_trainer_record, write_trainer_record
from .faults import fault_point
from .jobqueue import Job
from .paths import Home

log = logging.getLogger("trainingd.daemon")

TRAINER_ENV = "TRAININGD_TRAINER"
REPO_ROOT = Path(__file__).resolve().parent.parent


def trainer_argv(home: Home, job: Job) -> list[str]:
    script = os.environ.get(TRAINER_ENV)
    head = [sys.executable, script] if script else [sys.executable, "-m", "trainingd.train"]
    return head + ["--home", str(home.root), "--job-id", job.id, "--dataset", str(job.data_file),
                   "--reason-file", str(result_path(job.dir)), "--parent-pid", str(os.getpid())]


def tail(path: Path, lines: int = 30, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class TrainerProcess:
    """The one trainer process group of this daemon."""

    job: Job
    proc: subprocess.Popen
    started_at: str
    started_mono: float
    action: str = "run"
    stop_sent_at: float | None = None
    term_sent_at: float | None = None
    kill_sent_at: float | None = None

    @classmethod
    def start(cls, home: Home, job: Job) -> "TrainerProcess":
        """Start the trainer for ``job`` in a new session; its output goes to the training log."""
        clear_result(job.dir)  # never read an earlier attempt's result
        clear_progress(home)  # nor show an earlier attempt's progress
        env = dict(os.environ)
        # cwd is the home, so the package must be importable from the repository.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("HF_HUB_OFFLINE", "1")
        home.logs.mkdir(parents=True, exist_ok=True)
        with open(home.training_log, "ab") as out:
            out.write(f"\n===== {now_iso()} job {job.id} ({job.meta.get('original_name')}) attempt "
                      f"{job.meta.get('attempts', 0) + 1} =====\n".encode())
            out.flush()
            proc = subprocess.Popen(trainer_argv(home, job), cwd=home.root, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        running = cls(job=job, proc=proc, started_at=now_iso(), started_mono=time.monotonic())
        try:
            fault_point("trainer_spawn")
            # Durable before anything else happens: a daemon killed now leaves a trainer the next one can find.
            write_trainer_record(home, TrainerRecord(pid=proc.pid, pgid=proc.pid, job_id=job.id,
                                                     started_at=running.started_at, daemon_pid=os.getpid()))
        except BaseException:
            running.signal_group(signal.SIGKILL)
            proc.wait()
            raise
        return running

    def reaped(self, home: Home) -> None:
        """The trainer has exited and been waited for: forget its record."""
        clear_trainer_record(home)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session: the group id is the trainer's pid
        except ProcessLookupError:
            pass


def end_orphan_trainer(home: Home, grace_s: float) -> None:
    """A trainer of a killed daemon may still be finishing (or still loading); end it before starting another.

    It is found by the record written at spawn (``.trainer.json``), else by the pid in its progress file.
    """
    record = read_trainer_record(home)
    candidates = [record.pid if record else None, (read_progress(home) or {}).get("pid")]
    for pid in dict.fromkeys(p for p in candidates if isinstance(p, int) and p != os.getpid()):
        _end_trainer(pid, grace_s)
    clear_trainer_record(home)


def _end_trainer(pid: int, grace_s: float) -> None:
    import psutil  # torch-free; only needed here

    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return
    # The pid may have been reused since: only a trainer's command line counts.
    if "trainingd.train" not in cmdline and (os.environ.get(TRAINER_ENV) or "\0") not in cmdline:
        return
    log.warning("a trainer from an earlier daemon is still running (pid %d); stopping it", pid)
    try:
        pgid = os.getpgid(pid)
        os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except psutil.TimeoutExpired:
        try:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
        except (ProcessLookupError, psutil.Error, OSError):
            pass
    except (ProcessLookupError, psutil.Error, OSError):
        pass
