"""A full disk (ENOSPC) or a failing fsync (EIO) at each write point: the last good state stays, the daemon says
what happened, backs off and carries on; a failed fsync is never taken for a success.

    ./run_tests.sh tests/faults/test_disk_faults.py -q
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from fault_helpers import daemon_log, drop, job_metas, run_daemon, stand_in_home
from trainingd import faults
from trainingd.atomic_ops import atomic_write_json
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


def test_a_trainer_that_runs_out_of_disk_is_retried_without_counting_an_attempt(tmp_path):
    root, env = stand_in_home(tmp_path, max_attempts=1)
    drop(root, "a.jsonl", {"exit": 1, "name": "crash", "print": "OSError: [Errno 28] No space left on device",
                           "details": [{"errno": "ENOSPC"}], "once": str(tmp_path / "full-once"), "steps": 2})
    res = run_daemon(root, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ran out of disk space" in daemon_log(root)
    done = job_metas(root, "done")
    assert [m["original_name"] for m in done] == ["a.jsonl"] and done[0]["attempts"] == 0
    assert check_home(Home.at(root), expect_files=["a.jsonl"]) == []
    assert not temp_files(Home.at(root))
