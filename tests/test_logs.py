"""The daemon's log: today's lines in logs/daemon_YYYYMMDD.log (UTC), logs/daemon.log a link to it.

    nice -n 5 .venv/bin/python -m pytest -q tests/test_logs.py

Real files and the real stdlib handler; a "next day" is made by moving the handler's rollover time into the
past (what the stdlib does at midnight) and by dating files back, which is what a daemon restarted later finds.
The last test runs a real daemon and follows its log with ``tail -f logs/daemon_$(date +%Y%m%d).log``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path

import pytest

from conftest import wait_for, write_config
from trainingd.logs import setup_logging
from trainingd.paths import Home

DAY_S = 86400
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path):
    yield Home(tmp_path / "home")
    setup_logging(None, "WARNING")  # drop the file handler: later tests must not write into this home


def _day(t: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(t))


def _ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_trainingd", False)]


def test_records_go_to_todays_dated_file_and_daemon_log_points_at_it(home):
    setup_logging(home, "INFO")
    logging.getLogger("trainingd.test").info("hello from the daemon")
    today = home.logs / f"daemon_{_day(time.time())}.log"
    text = today.read_text()
    assert "INFO trainingd.test: hello from the daemon" in text
    assert text.startswith(time.strftime("%Y-%m-%d", time.gmtime()))
    assert home.daemon_log.is_symlink() and home.daemon_log.resolve() == today.resolve()
    assert home.daemon_log.read_text() == text
    assert any(isinstance(h, TimedRotatingFileHandler) for h in _ours())


def test_calling_setup_twice_keeps_one_file_handler_and_one_line_per_record(home):
    setup_logging(home, "INFO")
    setup_logging(home, "INFO")
    logging.getLogger("trainingd.test").info("once")
    assert sum(isinstance(h, TimedRotatingFileHandler) for h in _ours()) == 1
    assert home.daemon_log.read_text().count("once") == 1


def test_at_midnight_the_next_day_gets_its_own_file_and_the_link_follows(home):
    setup_logging(home, "INFO")
    log = logging.getLogger("trainingd.test")
    log.info("day one")
    first = home.daemon_log.resolve()
    (handler,) = [h for h in _ours() if isinstance(h, TimedRotatingFileHandler)]
    # the file of "yesterday" is today's name; make the handler believe midnight has passed and the day changed
    yesterday_name = home.logs / f"daemon_{_day(time.time() - DAY_S)}.log"
    os.replace(first, yesterday_name)
    handler.rolloverAt = int(time.time()) - 1
    log.info("day two")
    today = home.logs / f"daemon_{_day(time.time())}.log"
    assert "day one" in yesterday_name.read_text() and "day two" not in yesterday_name.read_text()
    assert "day two" in today.read_text()
    assert home.daemon_log.resolve() == today.resolve()
    assert handler.rolloverAt > time.time()


def test_only_keep_days_dated_logs_are_kept_and_other_files_are_left_alone(home):
    home.logs.mkdir(parents=True)
    old = [home.logs / f"daemon_2020010{d}.log" for d in range(1, 6)]
    for path in old:
        path.write_text(path.name)
    others = [home.logs / "daemon.2020-01-01.log", home.logs / "daemon_stdout.log",
              home.logs / "training_output.log"]
    for path in others:
        path.write_text("keep me")
    setup_logging(home, "INFO", keep_days=2)
    (handler,) = [h for h in _ours() if isinstance(h, TimedRotatingFileHandler)]
    handler.rolloverAt = int(time.time()) - 1
    logging.getLogger("trainingd.test").info("rotate now")
    dated = sorted(p.name for p in home.logs.glob("daemon_2*.log"))
    assert dated == ["daemon_20200104.log", "daemon_20200105.log", f"daemon_{_day(time.time())}.log"]
    assert all(p.read_text() == "keep me" for p in others)


def test_an_earlier_versions_daemon_log_is_kept_under_its_dated_name(home):
    home.logs.mkdir(parents=True)
    home.daemon_log.write_text("2000-01-01 old line\n")
    yesterday = time.time() - DAY_S
    os.utime(home.daemon_log, (yesterday, yesterday))
    setup_logging(home, "INFO")
    logging.getLogger("trainingd.test").info("new day")
    kept = home.logs / f"daemon.{time.strftime('%Y-%m-%d', time.gmtime(yesterday))}.log"
    assert kept.read_text() == "2000-01-01 old line\n"
    assert home.daemon_log.is_symlink()
    assert "new day" in home.daemon_log.read_text() and "old line" not in home.daemon_log.read_text()


def test_tail_f_of_the_seeds_path_follows_a_real_daemons_log(tmp_path):
    root = tmp_path / "home"
    root.mkdir()
    write_config(root, rescan_interval_s=0.2)
    env = {**os.environ, "TZ": "UTC", "PYTHONPATH": str(REPO)}
    daemon = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(root)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    tail = None
    try:
        wait_for(lambda: (root / ".daemon.pid").exists(), "the daemon's pid file")
        # exactly what the seed's users type, from the home
        tail = subprocess.Popen(["bash", "-c", "exec tail -n +1 -f logs/daemon_$(date +%Y%m%d).log"], cwd=root,
                                stdout=subprocess.PIPE, text=True, env=env)
        seen: list[str] = []
        threading.Thread(target=lambda: seen.extend(tail.stdout), daemon=True).start()
        wait_for(lambda: "daemon starting" in "".join(seen), "tail to show the daemon's first line")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        wait_for(lambda: "daemon exiting" in "".join(seen), "tail to show the daemon's last line")
    finally:
        if daemon.poll() is None:
            daemon.kill()
        if tail is not None:
            tail.kill()
            tail.wait()
