"""Each subsystem of a daemon tick fails alone: its error is logged once, shown in the status, and the others run.

    faults = Faults(home)
    jobs = faults.run("intake", intake.poll) or []      # None when intake failed this tick
    doc["faults"] = faults.status()

A fault is ``{"subsystem", "message", "path", "fix", "since"}``: ``path`` is relative to the home when the error
names one (an ``OSError``'s filename, or a :class:`HomeFault`'s path), ``fix`` what a person does about it. The same
fault seen again on the next tick is not logged again; a changed one is, and so is its end ("intake works again").
A full or failing disk (ENOSPC, EDQUOT, EIO) is not contained: it is a condition of the whole home, which the loop
waits out (it re-raises).
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
from pathlib import Path
from typing import Any, Callable, TypeVar

from trainingd.contracts.job import now_iso
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.loop")

T = TypeVar("T")
WAITED_OUT = (errno.ENOSPC, errno.EDQUOT, errno.EIO)  # the disk of the whole home, not one subsystem


class HomeFault(Exception):
    """Something in the home is not what belongs there; ``path`` is relative to the home, ``fix`` a command."""

    def __init__(self, message: str, path: str, fix: str):
        super().__init__(message)
        self.path = path
        self.fix = fix


def printable(name: str | bytes) -> str:
    """A file name as text that can be logged, stored in JSON and typed: undecodable bytes become ``\\xNN``."""
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    return raw.decode("utf-8", "backslashreplace")


def kind_of(mode: int) -> str:
    import stat

    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISREG, "file")):
        if test(mode):
            return name
    return "special file"


def not_a_folder(home: Home, folder: Path, what: str) -> HomeFault | None:
    """A HomeFault when ``folder`` exists but is not a real folder (a file, a link, anything else), else None."""
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return None
    import stat

    if stat.S_ISDIR(st.st_mode):
        return None
    rel = _relative(home, str(folder))
    q = shlex.quote(str(folder))
    return HomeFault(f"{rel} is not a folder (it is a {kind_of(st.st_mode)}): {what}", rel,
                     f"mv {q} {shlex.quote(str(folder) + '.moved')} && mkdir {q}")


def _relative(home: Home, path: str) -> str:
    try:
        return printable(str(Path(path).relative_to(home.root)))
    except ValueError:
        return printable(path)


class Faults:
    """The faults of one daemon's subsystems, by subsystem name."""

    def __init__(self, home: Home):
        self.home = home
        self.active: dict[str, dict[str, Any]] = {}

    def run(self, subsystem: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """``fn(*args, **kwargs)``, or None when it raised (recorded as the subsystem's fault)."""
        try:
            result = fn(*args, **kwargs)
        except OSError as e:
            if e.errno in WAITED_OUT:
                raise  # the whole home: the loop backs off until there is room
            self.record(subsystem, e)
            return None
        except Exception as e:  # noqa: BLE001 - containment: no subsystem's error reaches the others
            self.record(subsystem, e)
            return None
        self.clear(subsystem)
        return result

    def record(self, subsystem: str, e: BaseException) -> dict[str, Any]:
        fault = self.describe(subsystem, e)
        before = self.active.get(subsystem)
        if before is not None and (before["message"], before["path"]) == (fault["message"], fault["path"]):
            return before
        self.active[subsystem] = fault
        if isinstance(e, (OSError, HomeFault)):
            log.error("%s: %s (%s); fix: %s", subsystem, fault["message"], fault["path"] or "no path", fault["fix"])
        else:
            log.error("%s: internal error: %s", subsystem, fault["message"], exc_info=e)
        return fault

    def clear(self, subsystem: str) -> None:
        if self.active.pop(subsystem, None) is not None:
            log.info("%s works again", subsystem)

    def describe(self, subsystem: str, e: BaseException) -> dict[str, Any]:
        path: str | None = None
        if isinstance(e, HomeFault):
            message, path, fix = str(e), e.path, e.fix
        elif isinstance(e, OSError):
            path = _relative(self.home, os.fsdecode(e.filename)) if e.filename is not None else None
            message = printable(f"{e.strerror or e}")
            fix = _os_fix(self.home, e, path)
        else:
            message = printable(f"{type(e).__name__}: {e}")
            fix = (f"this is a bug: report it with the traceback from {self.home.daemon_log}; the daemon retries "
                   "every tick meanwhile")
        return {"subsystem": subsystem, "message": message, "path": path, "fix": fix, "since": now_iso()}

    def status(self) -> list[dict[str, Any]]:
        return [dict(f) for f in self.active.values()]


def _os_fix(home: Home, e: OSError, path: str | None) -> str:
    full = shlex.quote(str(home.root / path)) if path else "it"
    if e.errno == errno.ENOTDIR:
        return f"a folder of the home was replaced by a file: mv {full} {full}.moved && mkdir {full}"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"give the daemon's user access: chmod u+rwX {full} (or chown it)"
    if e.errno == errno.EISDIR:
        return f"a folder stands where a file belongs: mv {full} {full}.moved"
    return f"check {full} (type, permissions, filesystem); the daemon retries every tick"


__all__ = ["Faults", "HomeFault", "not_a_folder", "printable", "kind_of"]
