"""Logging of the daemon: stderr plus ``logs/daemon_YYYYMMDD.log`` (one file per UTC day), stdlib only.

    from trainingd.logs import setup_logging
    setup_logging(home, "INFO")
    tail -f logs/daemon_$(date -u +%Y%m%d).log      # today's log, the name the seed's users type
    tail -F logs/daemon.log                         # the same file; follows the next day's file too

The active file is named after its UTC day, ``logs/daemon_YYYYMMDD.log``, and ``logs/daemon.log`` is a
symbolic link to it, so readers of either name see today's lines. Rotation is the standard library's
``TimedRotatingFileHandler`` (its midnight arithmetic and its clean-up): at the first record after UTC
midnight the handler closes the file, opens the new day's file instead of renaming the old one, points
``daemon.log`` at it and deletes the oldest ``daemon_YYYYMMDD.log`` beyond ``keep_days``. No file is ever
renamed, so a file of the same name written by an earlier version is appended to, never replaced.

A regular ``logs/daemon.log`` left by a version that wrote today's lines there is renamed to the name that
version's rotation would have given it, ``daemon.YYYY-MM-DD.log`` (its day), and kept like the others.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

from trainingd.paths import Home

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KEEP_DAYS = 30
_DAY_FILE = re.compile(r"^(?P<stem>.+)_(?P<day>\d{8})(?P<suffix>\.[^.]+)$")


def day_file(link: Path, when: float | None = None) -> Path:
    """``logs/daemon.log`` -> ``logs/daemon_YYYYMMDD.log`` of the UTC day of ``when`` (default now)."""
    day = time.strftime("%Y%m%d", time.gmtime(time.time() if when is None else when))
    return link.with_name(f"{link.stem}_{day}{link.suffix}")


def _point_link(link: Path, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target``, replaced in one rename (readers never miss it)."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target.name)
        os.replace(tmp, link)
    except OSError:  # a filesystem without symbolic links: the dated name is still there
        tmp.unlink(missing_ok=True)


def _retire_old_regular_file(link: Path) -> None:
    """An earlier version's ``daemon.log`` (a regular file) -> ``daemon.YYYY-MM-DD.log``, the name it would get."""
    if link.is_symlink() or not link.is_file():
        return
    day = time.strftime("%Y-%m-%d", time.gmtime(link.stat().st_mtime))
    for n in range(100):
        dest = link.with_name(f"{link.stem}.{day}{'' if n == 0 else f'.{n}'}{link.suffix}")
        if not dest.exists():
            os.replace(link, dest)
            return


class DailyFileHandler(TimedRotatingFileHandler):
    """The stdlib's midnight rotation, writing each UTC day to its own ``<stem>_YYYYMMDD<suffix>``.

    ``link`` (``logs/daemon.log``) always points at the current day's file.
    """

    def __init__(self, link: Path, keep_days: int = KEEP_DAYS):
        link.parent.mkdir(parents=True, exist_ok=True)
        _retire_old_regular_file(link)
        self.link = link
        # an undecodable file name in a message is never a logging error
        super().__init__(day_file(link), when="midnight", utc=True, backupCount=keep_days, encoding="utf-8",
                         errors="backslashreplace")
        _point_link(link, Path(self.baseFilename))

    def doRollover(self) -> None:
        """Open the new day's file (nothing is renamed), repoint the link, drop days beyond ``backupCount``."""
        if self.stream:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        now = time.time()
        self.baseFilename = os.path.abspath(day_file(self.link, now))
        self.stream = self._open()
        _point_link(self.link, Path(self.baseFilename))
        for old in self.getFilesToDelete():
            Path(old).unlink(missing_ok=True)
        self.rolloverAt = self.computeRollover(int(now))

    def getFilesToDelete(self) -> list[str]:
        """The oldest ``<stem>_YYYYMMDD<suffix>`` files beyond ``backupCount`` (today's excluded)."""
        if self.backupCount <= 0:
            return []
        current = Path(self.baseFilename)
        days = []
        for path in current.parent.iterdir():
            m = _DAY_FILE.match(path.name)
            if (m and m["stem"] == self.link.stem and m["suffix"] == self.link.suffix and path != current
                    and path.is_file() and not path.is_symlink()):
                days.append(str(path))
        days.sort()  # YYYYMMDD sorts by day
        return days[:max(0, len(days) - self.backupCount)]

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        # The stdlib also rolls over when the file is not a regular file; here only the day decides.
        return int(time.time()) >= self.rolloverAt


def daily_file_handler(link: Path, keep_days: int = KEEP_DAYS) -> DailyFileHandler:
    """Today's ``<stem>_YYYYMMDD<suffix>`` beside ``link``, a new file each UTC day, ``keep_days`` of them kept."""
    return DailyFileHandler(link, keep_days)


def setup_logging(home: Home | None, level: str | int = "INFO", keep_days: int = KEEP_DAYS) -> None:
    """Log to stderr, and to the home's daily log file when ``home`` is given. Safe to call twice."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_trainingd", False):
            root.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(FORMAT)
    formatter.converter = time.gmtime  # UTC everywhere, like the status file and the rotation
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if home is not None:
        handlers.append(daily_file_handler(home.daemon_log, keep_days))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._trainingd = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # watchdog's per-event debug lines drown the daemon's own
    logging.getLogger("watchdog").setLevel(logging.WARNING)


def last_lines(path: Path, n: int, block: int = 64 << 10) -> tuple[list[str], int]:
    """The last ``n`` lines of a text file and the offset of its end (reading backwards: a log may be large)."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    return (lines[-n:] if n > 0 else []), end


def follow(link: Path, offset: int, write, poll_s: float = 0.5, should_stop=lambda: False) -> None:
    """Write what is appended to the file ``link`` points at from ``offset`` on, like ``tail -F``.

    When the link moves to the next day's file, the rest of the old one is written first, then the new one from
    its start. Returns when ``should_stop()`` is true (Ctrl-C ends it otherwise).
    """
    current = link.resolve()
    while not should_stop():
        try:
            with open(current, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            chunk = b""
        complete = chunk[:chunk.rfind(b"\n") + 1]  # a line still being written waits for its end
        if complete:
            write(complete.decode("utf-8", errors="replace"))
            offset += len(complete)
            continue
        target = link.resolve()
        if target != current and target.exists():
            current, offset = target, 0
            continue
        time.sleep(poll_s)
