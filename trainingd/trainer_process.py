"""The one trainer process group of a daemon: how it is started and signalled.

The trainer runs as ``python -m trainingd.train --home H --job-id ID --dataset FILE --reason-file
<job>/result.json --parent-pid <daemon>`` in its own session (so a signal to the group reaches every process it
starts, and a terminal's Ctrl-C does not), with the home as working directory and its output appended to
``logs/training_output.log``. What it is told to do goes through ``control/trainer_command.json``
(``trainingd.control``); signals are only the stop ladder's last rungs.

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

from .paths import Home
from .queue import Job, now_iso
from .status import read_progress

log = logging.getLogger("trainingd.daemon")

TRAINER_ENV = "TRAININGD_TRAINER"
REPO_ROOT = Path(__file__).resolve().parent.parent


def trainer_argv(home: Home, job: Job) -> list[str]:
    script = os.environ.get(TRAINER_ENV)
    head = [sys.executable, script] if script else [sys.executable, "-m", "trainingd.train"]
    return head + ["--home", str(home.root), "--job-id", job.id, "--dataset", str(job.data_file),
                   "--reason-file", str(job.dir / "result.json"), "--parent-pid", str(os.getpid())]


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
class Running:
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
    def start(cls, home: Home, job: Job) -> "Running":
        """Start the trainer for ``job`` in a new session; its output goes to the training log."""
        (job.dir / "result.json").unlink(missing_ok=True)  # never read an earlier attempt's result
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
        return cls(job=job, proc=proc, started_at=now_iso(), started_mono=time.monotonic())

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session: the group id is the trainer's pid
        except ProcessLookupError:
            pass


def end_orphan_trainer(home: Home, grace_s: float) -> None:
    """A trainer of a killed daemon may still be finishing; end it before starting another."""
    import psutil  # stdlib-free but torch-free; only needed here

    progress = read_progress(home) or {}
    pid = progress.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return
    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return
    if "trainingd.train" not in cmdline and (os.environ.get(TRAINER_ENV) or "\0") not in cmdline:
        return
    log.warning("a trainer from an earlier daemon is still running (pid %d); stopping it", pid)
    try:
        pgid = os.getpgid(pid)
        os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except psutil.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, psutil.Error, OSError):
        pass
