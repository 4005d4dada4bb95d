"""One daemon per home: the flock that makes a daemon "running", its pid file, and making a folder a home.

"Running" means "holds an exclusive flock on ``.daemon.lock``", never "the pid in ``.daemon.pid`` is alive": a
stale pid file cannot block a start, and a crashed daemon's lock is released by the kernel.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from trainingd.atomic_ops import atomic_create_text, atomic_write_text
from trainingd.config import default_config_json
from trainingd.paths import Home


def init_home(home: Home) -> bool:
    """Make ``home`` a usable home: every runtime folder and a default ``config.json`` if missing.

    Returns True when anything was created. Never touches an existing config.json.
    """
    created = False
    home.root.mkdir(parents=True, exist_ok=True)
    for folder in [*home.runtime_dirs(), home.queue / ".incoming"]:
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            created = True
    if atomic_create_text(home.config, default_config_json()):
        created = True
    return created


def read_pid(home: Home, pid_file: Path | None = None) -> int | None:
    """The pid in ``pid_file`` (default the daemon's ``.daemon.pid``), or None."""
    try:
        return int((pid_file or home.pid).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


class InstanceLock:
    """``fcntl.flock`` on ``.daemon.lock`` for the daemon's whole life: "running" means "the lock is held".

    ``lock_file``/``pid_file`` give the same guard to another process of a home (the monitor's
    ``.monitor.lock`` and ``.monitor.pid``).
    """

    def __init__(self, home: Home, lock_file: Path | None = None, pid_file: Path | None = None):
        self.home = home
        self.lock_file = lock_file or home.lock
        self.pid_file = pid_file or home.pid
        self.fd: int | None = None

    def acquire(self, write_pid: bool = True) -> bool:
        """Take the lock; False when another process holds it. ``write_pid=False`` leaves ``write_pid()`` for
        later (the monitor writes its pid only once it listens, so a waiting script can trust the file)."""
        # os.open descriptors are not inherited, so a trainer that outlives us never holds the lock.
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self.fd = fd
        if write_pid:
            self.write_pid()
        return True

    def write_pid(self) -> None:
        atomic_write_text(self.pid_file, f"{os.getpid()}\n")

    def release(self) -> None:
        if self.fd is None:
            return
        if read_pid(self.home, self.pid_file) == os.getpid():
            self.pid_file.unlink(missing_ok=True)
        os.close(self.fd)  # closing the descriptor drops the flock
        self.fd = None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_locked(lock_file: Path) -> bool:
    """True when some process holds an exclusive flock on ``lock_file``.

    Probes with a non-blocking *shared* flock on a read-only descriptor, released at once; the file is
    never created here (a missing lock file means no such process ever started in this home).
    """
    try:
        fd = os.open(lock_file, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def is_daemon_running(home: Home) -> bool:
    """True when some process holds the daemon's flock on ``.daemon.lock``."""
    return is_locked(home.lock)


def is_monitor_running(home: Home) -> bool:
    """True when some monitor holds ``.monitor.lock`` of this home."""
    return is_locked(home.monitor_lock)


# --- starting a daemon in the background (trainingd start, bin/launch_training_daemon.sh) -------------------

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the trainingd package
START_WAIT_S = 60.0


def package_env() -> dict[str, str]:
    """This environment with the running ``trainingd`` package first on ``PYTHONPATH``.

    A child started by its module name (``python -m trainingd ...``, from another working directory) then runs
    the same code as its parent: the checkout's package in a checkout, the installed one when installed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def start_daemon(home: Home, daemon_args: list[str], python: str | None = None,
                 wait_s: float = START_WAIT_S) -> tuple[int, str]:
    """Start ``python -m trainingd daemon`` for ``home`` in its own session; ``(exit code, message)``.

    0 once the daemon holds the lock and has written ``.daemon.pid``; 1 when a daemon already runs for this home
    (the lock is held, or the new one lost the race and exited 75) or it could not start (the message quotes
    ``logs/daemon_stdout.log``, where its stdout and stderr go).
    """
    import subprocess
    import sys
    import time

    from trainingd.exit_codes import ALREADY_RUNNING

    def refused() -> tuple[int, str]:
        pid = read_pid(home)
        return 1, (f"trainingd daemon already running for {home.root} (pid {pid if pid else 'unknown'}); "
                   "not starting another")

    if is_daemon_running(home):  # fast refusal; the daemon's own flock decides a race
        return refused()
    home.logs.mkdir(parents=True, exist_ok=True)
    out = home.logs / "daemon_stdout.log"
    argv = [python or sys.executable, "-m", "trainingd", "daemon", "--home", str(home.root), *daemon_args]
    with open(out, "ab") as log, open(os.devnull, "rb") as devnull:
        # start_new_session: its own session, so closing this terminal does not signal it
        child = subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=subprocess.STDOUT, env=package_env(),
                                 cwd=home.root, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        rc = child.poll()
        if rc is not None:
            if rc == ALREADY_RUNNING:
                return refused()
            last = out.read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
            return 1, "\n".join([f"trainingd start: the daemon exited with code {rc}; see {out}", *last])
        if read_pid(home) == child.pid:
            return 0, f"trainingd daemon started for {home.root} (pid {child.pid}); log: {home.logs}/"
        time.sleep(0.1)
    return 1, f"trainingd start: the daemon (pid {child.pid}) did not write {home.pid} within {wait_s:g}s"
