"""Logging of the daemon: stderr plus ``logs/daemon.log``, rotated at UTC midnight, stdlib only.

    from trainingd.logs import setup_logging
    setup_logging(home, "INFO")

Rotation is the standard library's ``TimedRotatingFileHandler``: today's lines go to ``logs/daemon.log``;
at the first record after UTC midnight it is renamed to ``logs/daemon.YYYY-MM-DD.log`` (the day it holds)
and the oldest dated files beyond ``keep_days`` are deleted. A daemon started on a later day rotates the
file it finds first (the handler dates it by its modification time).

Why not the ``daemon_YYYYMMDD.log`` names of earlier versions: the stdlib handler writes the current day to
a fixed name and renames it at midnight; on Python 3.10/3.11 it recognises old files for deletion only by
the ``daemon.`` prefix; and it replaces a file already holding the rotated name, which would erase an
earlier version's log of the same day. Files of the old name are left alone.
"""

from __future__ import annotations

import logging
import sys
import time
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

from trainingd.paths import Home

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KEEP_DAYS = 30


def one_line(text: str) -> str:
    """``text`` with every control character and undecodable byte escaped (``\\n``, ``\\x1b``, ``\\udcff``): a
    file name holding a newline cannot forge a log line, and a name that is not UTF-8 cannot break the log."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\t")  # readable and harmless
        elif code < 0x20 or 0x7f <= code < 0xa0 or code in (0x2028, 0x2029):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        elif 0xd800 <= code < 0xe000:  # a lone surrogate: an undecodable byte of a file name (surrogateescape)
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


class OneLineFormatter(logging.Formatter):
    """One record, one line: the message is escaped (``one_line``); a traceback below it is kept as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - the stdlib's name
        record.message = one_line(record.message)
        return super().formatMessage(record)


def dated_name(default_name: str) -> str:
    """``logs/daemon.log.2026-11-30`` (the stdlib's rotated name) -> ``logs/daemon.2026-11-30.log``.

    The extension stays last, so the file still opens as a log; the stdlib's clean-up recognises this form.
    """
    path = Path(default_name)
    stem, day = path.name.rsplit(".", 1)  # "daemon.log", "2026-11-30"
    base = Path(stem)
    return str(path.with_name(f"{base.stem}.{day}{base.suffix}"))


def daily_file_handler(path: Path, keep_days: int = KEEP_DAYS) -> TimedRotatingFileHandler:
    """``path`` rotated at UTC midnight into ``<stem>.YYYY-MM-DD<suffix>``, keeping ``keep_days`` of those."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = TimedRotatingFileHandler(path, when="midnight", utc=True, backupCount=keep_days, encoding="utf-8")
    handler.namer = dated_name
    return handler


def setup_logging(home: Home | None, level: str | int = "INFO", keep_days: int = KEEP_DAYS) -> None:
    """Log to stderr, and to the home's daily log file when ``home`` is given. Safe to call twice."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_trainingd", False):
            root.removeHandler(handler)
            handler.close()
    formatter = OneLineFormatter(FORMAT)
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
