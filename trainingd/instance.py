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
    for folder in [*home.runtime_dirs(), home.incoming]:
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
