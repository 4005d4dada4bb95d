"""A full disk (ENOSPC) or a failing fsync (EIO) at each write point: the last good state stays, the daemon says
what happened, backs off and carries on; a failed fsync is never taken for a success.

    ./run_tests.sh tests/faults/test_disk_faults.py -q
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import wait_for
from fault_helpers import DAEMON, REPO, daemon_log, drop, job_metas, run_daemon, stand_in_home
from trainingd import faults
from trainingd.atomic_ops import atomic_write_json, read_json
from trainingd.checks.health import run_checks
from trainingd.checks.invariants import check_home, temp_files
from trainingd.paths import Home
from trainingd.train import checkpoint as ckpt

pytestmark = pytest.mark.faults

FILES = {"a.jsonl": {"steps": 2}, "b.jsonl": {"steps": 2}}
MESSAGES = {"ENOSPC": "No space left on device", "EIO": "Input/output error"}


@pytest.fixture
def inject(monkeypatch):
    """Turn on TRAININGD_FAIL_AT in this process (and off again afterwards)."""

    def on(spec: str) -> None:
        monkeypatch.setenv(faults.FAIL_ENV, spec)
        faults.reload()

    yield on
    monkeypatch.delenv(faults.FAIL_ENV, raising=False)
    faults.reload()


@pytest.mark.parametrize("code", ["ENOSPC", "EIO"])
def test_a_failed_write_or_fsync_keeps_the_old_file_and_leaves_no_temp(tmp_path, inject, code):
    target = tmp_path / "status" / "training_status.json"
    atomic_write_json(target, {"seq": 1})
    inject(f"status:1:{code}")
    with pytest.raises(OSError) as err:
        atomic_write_json(target, {"seq": 2}, point="status")
    assert err.value.errno == getattr(errno, code)
    assert json.loads(target.read_text()) == {"seq": 1}  # never replaced by what was not made durable
    assert list(target.parent.iterdir()) == [target]
    atomic_write_json(target, {"seq": 3}, point="status")  # the next write, with room again, works
    assert json.loads(target.read_text()) == {"seq": 3}


@pytest.mark.parametrize("code", ["ENOSPC", "EIO"])
def test_a_failed_checkpoint_save_keeps_the_last_good_one(tmp_path, inject, code):
    def write(folder: Path) -> None:
        (folder / "adapter_model.safetensors").write_bytes(b"weights")

    good = ckpt.save_checkpoint(tmp_path, 2, write_files=write, manifest={"job_id": "j"}, keep=2)
    inject(f"checkpoint_save:1:{code}")
    with pytest.raises(OSError):
        ckpt.save_checkpoint(tmp_path, 4, write_files=write, manifest={"job_id": "j"}, keep=2)
    assert ckpt.list_complete(tmp_path) == [good]
    assert [p.name for p in tmp_path.iterdir()] == [good.name]


@pytest.mark.parametrize("hit", [1, 2])
def test_a_full_disk_while_publishing_keeps_the_published_adapter(tmp_path, inject, hit):
    src, dest = tmp_path / "src", tmp_path / "current_model"
    for folder, text in ((src, "new"), (dest, "old")):
        folder.mkdir()
        for name in ckpt.ADAPTER_FILES:
            (folder / name).write_text(text)
    (dest / "adapter_state.json").write_text('{"trained": []}\n')
    inject(f"publish_file:{hit}:ENOSPC")
    with pytest.raises(OSError):
        ckpt.publish_adapter(src, dest, {"trained": [{"job_id": "j"}]})
    assert json.loads((dest / "adapter_state.json").read_text()) == {"trained": []}  # the job is not "trained"
    assert (dest / "adapter_model.safetensors").read_text() == "old"
    assert sorted(p.name for p in dest.iterdir()) == sorted([*ckpt.ADAPTER_FILES, "adapter_state.json"])


# point -> the hit at which this daemon's write fails (once)
DAEMON_WRITES = {"status": 2, "job_meta": 3, "claim": 1, "claimed": 1, "trainer_command": 1, "complete": 1,
                 "completed": 2, "intake": 1, "intake_publish": 2}


@pytest.mark.parametrize("point", sorted(DAEMON_WRITES))
def test_the_daemon_backs_off_and_carries_on_after_a_full_disk_at_each_write(tmp_path, point):
    code = "EIO" if point in ("status", "trainer_command") else "ENOSPC"  # EIO: the fsync of an atomic write
    root, env = stand_in_home(tmp_path)
    for name, spec in FILES.items():
        drop(root, name, spec)
    res = run_daemon(root, env, faults={faults.FAIL_ENV: f"{point}:{DAEMON_WRITES[point]}:{code}"})
    assert res.returncode == 0, res.stderr[-3000:]
    log = daemon_log(root)
    assert f"injected at fault point {point}" in log and MESSAGES[code] in log  # it says what happened
    assert "retrying in" in log or "could not take" in log  # and backs off (the inbox retries at its next scan)
    assert check_home(Home.at(root), expect_files=FILES) == []
    assert sorted(m["original_name"] for m in job_metas(root, "done")) == sorted(FILES)
    assert all(m["attempts"] == 0 for m in job_metas(root, "done"))  # a full disk is not the job's fault


def out_of_disk_once(tmp_path: Path) -> dict:
    """A stand-in job whose first trainer runs out of disk space, as the real one reports it."""
    return {"exit": 1, "name": "crash", "print": "OSError: [Errno 28] No space left on device",
            "details": [{"errno": "ENOSPC"}], "once": str(tmp_path / "full-once"), "steps": 2}


def test_a_trainer_that_runs_out_of_disk_is_retried_without_counting_an_attempt(tmp_path):
    root, env = stand_in_home(tmp_path, max_attempts=1)
    drop(root, "a.jsonl", out_of_disk_once(tmp_path))
    # The disk stays full for three more probes after the trainer's failure: the hold lifts only once one fits.
    res = run_daemon(root, env, faults={faults.FAIL_ENV: "room_probe:1:ENOSPC:3"})
    assert res.returncode == 0, res.stderr[-3000:]
    log = daemon_log(root)
    assert "ran out of disk space" in log
    assert log.count("injected at fault point room_probe") == 0  # a failed probe is the answer, not an error
    assert "the disk of the home has room again; jobs start again" in log
    done = job_metas(root, "done")
    assert [m["original_name"] for m in done] == ["a.jsonl"] and done[0]["attempts"] == 0
    assert check_home(Home.at(root), expect_files=["a.jsonl"]) == []
    assert not temp_files(Home.at(root))


def test_a_full_disk_holds_the_daemon_with_a_condition_the_doctor_reports(tmp_path):
    root, env = stand_in_home(tmp_path, max_attempts=1)
    drop(root, "a.jsonl", out_of_disk_once(tmp_path))
    status = root / "status" / "training_status.json"
    proc = subprocess.Popen([*DAEMON, "--home", str(root)], env={**env, faults.FAIL_ENV: "room_probe:1:ENOSPC:100000"},
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def held() -> dict | None:
            doc = read_json(status) if status.exists() else None
            return doc if (doc or {}).get("condition", {}) and doc["condition"]["kind"] == "disk_full" else None

        doc = wait_for(held, "the status to say the disk is full")
        assert doc["status"] == "paused" and "is full" in doc["status_detail"] and "df -h" in doc["status_detail"]
        report = run_checks(Home.at(root))
        (problem,) = next(c for c in report["checks"] if c["check"] == "status")["problems"]
        assert not report["ok"] and "the daemon is held: the disk of" in problem["problem"]
        assert "trainingd clean --dry-run" in problem["fix"]
        assert not job_metas(root, "done") and held() is not None  # still held: no job starts on a full disk
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()[-3000:]
    res = run_daemon(root, env)  # the disk has room again
    assert res.returncode == 0, res.stderr[-3000:]
    done = job_metas(root, "done")
    assert [m["original_name"] for m in done] == ["a.jsonl"] and done[0]["attempts"] == 0
    assert read_json(status)["condition"] is None and run_checks(Home.at(root))["ok"]
