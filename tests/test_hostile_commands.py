"""Command lines and files as a hostile user gives them: each refused with a reason, none a traceback or a leak.

Run: .venv/bin/python -m pytest tests/test_hostile_commands.py -q
"""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import chat_lines, wait_for, write_jsonl
from trainingd.atomic_ops import atomic_write_json
from trainingd.contracts.status import read_status
from trainingd.jobqueue import JobQueue
from trainingd.logs import setup_logging
from trainingd.paths import Home
from trainingd.train.formats import DataError, scan_file

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def run(script: str, *argv: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / script), *argv], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=timeout)


def assert_refused(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


# --- finding 11: training_queue.py add --------------------------------------------------------------

def test_add_keeps_a_private_sources_mode_and_the_inbox_name_rules(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    secret = write_jsonl(tmp_path / "private.jsonl", chat_lines(2))
    os.chmod(secret, 0o640)
    r = run("training_queue.py", "--home", str(home), "--json", "add", str(secret))
    assert r.returncode == 0, r.stderr
    job = JobQueue(Home.at(home)).get(json.loads(r.stdout)["job"]["id"])
    mode = stat.S_IMODE(job.data_file.stat().st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == (0o640 & ~umask) | 0o600, f"the copy's mode is {oct(mode)}, its source's 0o640"

    shadow = tmp_path / "shadow"
    shadow.write_text("root:x:19000::\n")
    for name in (shadow, tmp_path / ".hidden.jsonl", tmp_path / "half.jsonl.part"):
        if not name.exists():
            name.write_text('{"text": "x"}\n')
        r = run("training_queue.py", "--home", str(home), "add", str(name))
        assert_refused(r)
        assert name.name in r.stderr
    assert len(JobQueue(Home.at(home)).jobs()) == 1


# --- finding 12: a name with a newline cannot forge a log line ------------------------------------------

def test_a_file_name_with_a_newline_is_one_escaped_line_in_daemon_log(tmp_path):
    h = Home.at(tmp_path)
    src = write_jsonl(tmp_path / "src" / "a\n2026-01-01 00:00:00,000 INFO forged: all good.jsonl", chat_lines(2))
    setup_logging(h, "INFO")
    try:
        JobQueue(h).add(src)
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_trainingd", False):
                logging.getLogger().removeHandler(handler)
                handler.close()
    lines = h.daemon_log.read_text(encoding="utf-8").splitlines()
    added = [ln for ln in lines if "added from" in ln]
    assert len(added) == 1 and "a\\n2026-01-01" in added[0], lines
    assert not any(ln.startswith("2026-01-01 00:00:00,000 INFO forged") for ln in lines), lines


# --- finding 13: command lines ------------------------------------------------------------------------

def test_a_home_that_does_not_exist_is_refused_except_by_init(tmp_path):
    missing = tmp_path / "no" / "such"
    data = write_jsonl(tmp_path / "a.jsonl", chat_lines(2))
    assert_refused(run("training_queue.py", "--home", str(missing), "add", str(data)), "no such folder",
                   "trainingd init")
    assert not missing.exists(), "a queue no daemon reads was created"
    assert_refused(run("training_controller.py", "--home", str(missing), "status"), "no such folder")
    r = subprocess.run([PY, "-m", "trainingd", "--home", str(missing), "init"], capture_output=True, text=True,
                       env=ENV, cwd=REPO, timeout=60)
    assert r.returncode == 0 and (missing / "inbox").is_dir(), r.stderr


def test_a_home_that_is_a_file_or_empty_is_a_usage_error_not_a_traceback(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for script, argv in (("training_queue.py", ["status"]), ("training_controller.py", ["status"]),
                         ("training_queue.py", ["list"]), ("config_validator.py", [])):
        assert_refused(run(script, "--home", str(a_file), *argv), "is a file, not a home folder")
        r = run(script, "--home", "", *argv, cwd=tmp_path)
        assert_refused(r, "--home", "empty")
        assert r.returncode == 2
    assert_refused(run("training_daemon.py", "--home", ""), "empty")
    assert list(tmp_path.iterdir()) == [a_file], "nothing was created in the current folder"


def test_the_validator_refuses_a_device_and_an_oversized_file_without_reading_them(tmp_path):
    t0 = time.monotonic()
    r = run("config_validator.py", "/dev/zero", timeout=30)
    assert_refused(r, "not a regular file")
    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "a" * (2 << 20) + '"}')
    assert_refused(run("config_validator.py", str(big)), "larger than")
    assert time.monotonic() - t0 < 30  # the limit only keeps a broken build from reading /dev/zero for ever


def test_a_port_out_of_range_and_a_negative_max_jobs_are_usage_errors(tmp_path):
    r = run("launch_live_monitor.py", "--home", str(tmp_path), "--port", "99999")
    assert_refused(r, "--port", "99999")
    assert r.returncode == 2
    r = run("training_daemon.py", "--home", str(tmp_path), "--max-jobs", "-1")
    assert_refused(r, "--max-jobs")
    assert r.returncode == 2


def test_a_utf16_file_is_named_so_with_the_command_that_converts_it(tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_bytes("".join(json.dumps(r) + "\n" for r in chat_lines(2)).encode("utf-16"))
    with pytest.raises(DataError) as e:
        scan_file(path)
    assert "UTF-16" in str(e.value) and "iconv -f UTF-16 -t UTF-8 notes.jsonl" in str(e.value)


def test_a_lone_surrogate_is_refused_at_validation_with_its_line_number(tmp_path):
    path = tmp_path / "s.jsonl"
    good = json.dumps(chat_lines(1)[0])
    bad = '{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "ok"}]}'
    path.write_text(good + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        scan_file(path)
    assert "line 2" in str(e.value) and "surrogate" in str(e.value)


def test_an_unknown_control_action_is_acknowledged_as_refused(tmp_path):
    home = Home.at(tmp_path)
    daemon = subprocess.Popen([PY, str(REPO / "training_daemon.py"), "--home", str(tmp_path)], env=ENV, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (read_status(home) or {}).get("status") == "idle", "the daemon to be idle")
        atomic_write_json(home.control_requests / f"{time.time_ns():020d}-reboot-abc123.json",
                          {"id": "abc123", "action": "reboot", "created_at": time.time()})
        ack = wait_for(lambda: next((a for a in ((read_status(home) or {}).get("control") or {}).get("acks") or []
                                     if a.get("id") == "abc123"), None), "the acknowledgement")
        assert ack["result"].startswith("refused") and "reboot" in ack["result"]
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def test_a_job_held_in_processing_with_no_trainer_is_not_reported_idle(tmp_path):
    from trainingd.config import Config
    from trainingd.daemon.loop import Daemon

    home = Home.at(tmp_path)
    q = JobQueue(home)
    q.ensure_dirs()
    q.add(write_jsonl(tmp_path / "src" / "a.jsonl", chat_lines(2)))
    job = q.claim_next()  # claimed, and then (say) the disk filled before a trainer could start
    daemon = Daemon(home, Config())
    daemon.last_error = {"message": "I/O error in the daemon loop: [Errno 28] No space left on device",
                         "job_id": None, "at": "now"}
    doc = daemon.write_status()
    assert doc["status"] != "idle" and job.id in doc["status_detail"], doc["status_detail"]
    assert "No space left" in doc["status_detail"]
