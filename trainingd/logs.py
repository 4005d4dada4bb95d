"""Logging of the daemon: stderr plus ``logs/daemon_YYYYMMDD.log`` (one file per UTC day), stdlib only.

    from trainingd.logs import setup_logging
    setup_logging(home, "INFO")
"""

from __future__ import annotations

import logging
import sys
import time

from .paths import Home

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class DailyFileHandler(logging.Handler):
    """Appends to ``logs/daemon_<UTC date>.log``, switching files when the date changes."""

    def __init__(self, home: Home):
        super().__init__()
        self.home = home
        self._day: str | None = None
        self._stream = None

    def _open_for_today(self) -> None:
        day = time.strftime("%Y%m%d", time.gmtime())
        if day != self._day or self._stream is None:
            if self._stream is not None:
                self._stream.close()
            path = self.home.daemon_log(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "a", encoding="utf-8")
            self._day = day

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            self.acquire()
            try:
                self._open_for_today()
                self._stream.write(msg + "\n")
                self._stream.flush()
            finally:
                self.release()
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)

    def close(self) -> None:
        self.acquire()
        try:
            if self._stream is not None:
                self._stream.close()
                self._stream = None
        finally:
            self.release()
        super().close()


def setup_logging(home: Home | None, level: str | int = "INFO") -> None:
    """Log to stderr, and to the home's daily log file when ``home`` is given. Safe to call twice."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_trainingd", False):
            root.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter(FORMAT)
    formatter.converter = time.gmtime  # UTC everywhere, like the status file
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if home is not None:
        handlers.append(DailyFileHandler(home))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._trainingd = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # watchdog's per-event debug lines drown the daemon's own
    logging.getLogger("watchdog").setLevel(logging.WARNING)
