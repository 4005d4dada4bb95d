"""The daemon's log: today's lines in logs/daemon.log, earlier UTC days in logs/daemon.YYYY-MM-DD.log.

    ./run_tests.sh tests/test_logs.py -q

Real files and the real stdlib handler; a "next day" is made by dating the log file back (os.utime), which
is what a daemon restarted after midnight finds.
"""

from __future__ import annotations

import logging
import os
import time
from logging.handlers import TimedRotatingFileHandler

import pytest

from trainingd.logs import setup_logging
from trainingd.paths import Home

DAY_S = 86400


@pytest.fixture
def home(tmp_path):
    yield Home(tmp_path / "home")
    setup_logging(None, "WARNING")  # drop the file handler: later tests must not write into this home


def _utc_day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_trainingd", False)]


def test_records_go_to_daemon_log_with_utc_timestamps(home):
    setup_logging(home, "INFO")
    logging.getLogger("trainingd.test").info("hello from the daemon")
    text = home.daemon_log.read_text()
    assert "INFO trainingd.test: hello from the daemon" in text
    assert text.startswith(time.strftime("%Y-%m-%d", time.gmtime()))
    assert any(isinstance(h, TimedRotatingFileHandler) for h in _ours())


def test_calling_setup_twice_keeps_one_file_handler_and_one_line_per_record(home):
    setup_logging(home, "INFO")
    setup_logging(home, "INFO")
    logging.getLogger("trainingd.test").info("once")
    assert sum(isinstance(h, TimedRotatingFileHandler) for h in _ours()) == 1
    assert home.daemon_log.read_text().count("once") == 1


def test_a_log_from_an_earlier_day_is_rotated_to_its_dated_name(home):
    home.logs.mkdir(parents=True)
    home.daemon_log.write_text("2000-01-01 old line\n")
    yesterday = time.time() - DAY_S
    os.utime(home.daemon_log, (yesterday, yesterday))
    setup_logging(home, "INFO")
    logging.getLogger("trainingd.test").info("new day")
    rotated = home.logs / f"daemon.{_utc_day(yesterday)}.log"
    assert rotated.read_text() == "2000-01-01 old line\n"
    assert "new day" in home.daemon_log.read_text() and "old line" not in home.daemon_log.read_text()


def test_only_keep_days_dated_logs_are_kept_and_other_files_are_left_alone(home):
    home.logs.mkdir(parents=True)
    old = [home.logs / f"daemon.2020-01-0{d}.log" for d in range(1, 6)]
    for path in old:
        path.write_text(path.name)
    others = [home.logs / "daemon_20200101.log", home.logs / "daemon_stdout.log", home.logs / "training_output.log"]
    for path in others:
        path.write_text("keep me")
    home.daemon_log.write_text("yesterday\n")
    yesterday = time.time() - DAY_S
    os.utime(home.daemon_log, (yesterday, yesterday))
    setup_logging(home, "INFO", keep_days=2)
    logging.getLogger("trainingd.test").info("rotate now")
    dated = sorted(p.name for p in home.logs.glob("daemon.*-*-*.log"))
    assert dated == ["daemon.2020-01-05.log", f"daemon.{_utc_day(yesterday)}.log"]
    assert all(p.read_text() == "keep me" for p in others)
