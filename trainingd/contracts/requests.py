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
Anything there that is not a regular file (a FIFO, a socket, a folder, a symlink) is never opened or followed: it
is returned with action ``rejected`` and a reason, and ``consume`` sets it aside in ``control/rejected/``. Files
are opened with ``O_NONBLOCK | O_NOFOLLOW`` and read up to ``MAX_REQUEST_BYTES``, so nothing put there can block
or flood the daemon.

``.stop`` at the root of the home is the emergency stop: the same as a ``stop`` request. Both the daemon and
the trainer watch it (``is_emergency_stop``); the daemon removes it once it has stopped.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from trainingd.atomic_ops import atomic_write_json
from trainingd.paths import Home

ACTIONS = ("pause", "resume", "stop", "skip")
MAX_REQUEST_BYTES = 64 * 1024
REJECTED = "rejected"  # control/rejected/: what stood in control/requests/ but was not a request file


@dataclass(frozen=True)
class Request:
    id: str
    action: str  # one of ACTIONS, "invalid" for a file that could not be parsed, "rejected" for a non-file
    created_at: float  # seconds since the epoch
    path: Path
    reason: str = ""  # why a "rejected" entry is not a request


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
    """Pending requests, oldest first. A malformed file is returned as action ``invalid`` so it is dropped, not
    retried; an entry that is not a regular file as action ``rejected`` (never opened).

    Raises NotADirectoryError when ``control/requests`` itself is not a real folder (a file, a symlink)."""
    out: list[Request] = []
    folder = home.control_requests
    try:
        st = os.lstat(folder)
    except FileNotFoundError:
        return out
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "control/requests is not a folder; no control request is read",
                                 str(folder))
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.name.endswith(".json"))
    for name in names:
        path = folder / name
        try:
            out.append(_read_one(path))
        except FileNotFoundError:
            continue  # removed meanwhile
        except (ValueError, KeyError, TypeError, OSError):
            out.append(Request(path.stem, "invalid", 0.0, path))
    return out


def _read_one(path: Path) -> Request:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return Request(path.stem, REJECTED, 0.0, path, reason=f"a {_kind(st.st_mode)}, not a request file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped after the lstat
            raise ValueError("not a regular file")
        data = os.read(fd, MAX_REQUEST_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError("too large for a request")
    doc = json.loads(data.decode("utf-8")) or {}
    return Request(str(doc["id"]), str(doc["action"]), float(doc.get("created_at", 0)), path)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def rejected_folder(home: Home) -> Path:
    return home.control_requests.parent / REJECTED


def consume(request: Request) -> Path | None:
    """Delete a request file once it has been applied to the daemon's intent. A ``rejected`` entry is moved,
    never opened or followed, into ``control/rejected/`` (returned), so nothing put there is lost or seen twice."""
    if request.action != REJECTED:
        try:
            request.path.unlink(missing_ok=True)
            return None
        except IsADirectoryError:
            pass  # it became a folder after it was read: set aside like one
    target_dir = request.path.parent.parent / REJECTED
    target_dir.mkdir(exist_ok=True)
    for n in range(1000):
        target = target_dir / (request.path.name if n == 0 else f"{request.path.name}.{n}")
        if not os.path.lexists(target):
            try:
                os.rename(request.path, target)
            except FileNotFoundError:
                return None
            return target
    raise FileExistsError(errno.EEXIST, "control/rejected/ holds 1000 entries of this name", str(request.path))


def is_emergency_stop(home: Home) -> bool:
    """True while ``.stop`` exists at the root of the home."""
    return os.path.lexists(home.emergency_stop)  # of any kind, a link too (never followed)


def clear_emergency_stop(home: Home) -> None:
    try:
        home.emergency_stop.unlink(missing_ok=True)
    except IsADirectoryError:
        # A folder named .stop: it did its job; set aside (never deleted) so it does not stop the next daemon.
        folder = home.control_requests.parent / REJECTED
        folder.mkdir(parents=True, exist_ok=True)
        os.rename(home.emergency_stop, folder / f".stop.{time.time_ns()}")
