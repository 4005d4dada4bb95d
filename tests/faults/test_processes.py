"""Processes under stress: torn reads, fifty launches at once, orphaned trainers, trainers that crash in a loop.

    ./run_tests.sh tests/faults/test_processes.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from fault_helpers import REPO, DAEMON, daemon_log, drop, job_metas, run_daemon, stand_in_home, write_config
from trainingd.instance import is_daemon_running
from trainingd.checks.invariants import check_home
from trainingd.paths import Home

pytestmark = pytest.mark.faults

LAUNCHER = REPO / "bin" / "launch_training_daemon.sh"
READS = 100_000

STATUS_WRITER = r'''
import sys, time
from trainingd.contracts.status import StatusWriter, compose_status
from trainingd.paths import Home
home = Home.at(sys.argv[1])
writer = StatusWriter(home)
doc = compose_status(daemon={"pid": 1, "version": "x", "started_at": "now", "home": sys.argv[1]}, status="training",
                     status_detail="x" * 2000, queue={"pending": {"high": 0, "normal": 5, "low": 0}, "processing": 1,
                     "done": 3, "failed": 0})
print("writing", flush=True)
while True:
    doc["status_detail"] = ("y" if doc["status_detail"][0] == "x" else "x") * (1000 + int(time.time() * 1e6) % 3000)
    writer.write(doc)  # as the daemon does every tick (atomic, not fsynced)
'''


def test_a_reader_never_sees_a_partial_status_file(tmp_path):
    home = tmp_path / "home"
    (home / "status").mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", STATUS_WRITER, str(home)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert writer.stdout.readline().strip() == "writing"
        path = home / "status" / "training_status.json"
        while not path.exists():
            time.sleep(0.01)
        torn, seqs = [], set()
        for _ in range(READS):
            text = path.read_text(encoding="utf-8")
            try:
                seqs.add(json.loads(text)["seq"])
            except (ValueError, KeyError) as e:
                torn.append(f"{e}: {text[:80]!r}...{text[-80:]!r}")
    finally:
        writer.kill()
        writer.wait()
    assert not torn, f"{len(torn)} of {READS} reads were partial, e.g. {torn[0]}"
    assert len(seqs) > 100, "the writer was not writing while the reader read"


def _launch(root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(["bash", str(LAUNCHER), "--home", str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _daemons_of(root: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        # the foreground script, or what `trainingd start` (the launcher) runs: python -m trainingd daemon
        is_daemon = any(c.endswith("training_daemon.py") for c in cmd) or cmd[1:4] == ["-m", "trainingd", "daemon"]
        if is_daemon and str(root) in cmd:
            out.append(p)
    return out


def _stop(root: Path) -> None:
    for p in _daemons_of(root):
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


@pytest.mark.slow
def test_fifty_launches_at_once_leave_exactly_one_daemon(tmp_path):
    root = (tmp_path / "home").resolve()
    root.mkdir()
    write_config(root, stable_seconds=0.2)
    try:
        launches = [_launch(root) for _ in range(50)]
        results = [(p.wait(timeout=300), p.stderr.read()) for p in launches]
        codes = [code for code, _ in results]
        assert codes.count(0) == 1, results[:3]
        assert codes.count(1) == 49
        assert all("already running" in err for code, err in results if code == 1)
        time.sleep(1.0)
        alive = _daemons_of(root)
        assert len(alive) == 1, [p.pid for p in alive]
        assert int((root / ".daemon.pid").read_text()) == alive[0].pid
    finally:
        _stop(root)


def test_a_stale_pid_file_naming_a_live_unrelated_process_does_not_block_a_start(tmp_path):
    root = (tmp_path / "home").resolve()
    root.mkdir()
    unrelated = subprocess.Popen(["sleep", "120"])
    try:
        (root / ".daemon.pid").write_text(f"{unrelated.pid}\n")
        res = _launch(root)
        out, err = res.communicate(timeout=120)
        assert res.returncode == 0, err
        pid = int((root / ".daemon.pid").read_text())
        assert pid != unrelated.pid and is_daemon_running(Home.at(root))
        assert unrelated.poll() is None  # never signalled
    finally:
        _stop(root)
        unrelated.kill()
        unrelated.wait()


# ------------------------------------------------------------------------------------------------ crash loops
def test_a_trainer_that_takes_its_daemon_down_every_time_ends_at_max_attempts(tmp_path):
    root, env = stand_in_home(tmp_path, max_attempts=3)
    drop(root, "loop.jsonl", {"kill_parent": True})
    drop(root, "ok.jsonl", {"steps": 1})
    codes = []
    for _ in range(6):
        res = run_daemon(root, env)
        codes.append(res.returncode)
        if res.returncode == 0:
            break
    assert codes == [-signal.SIGKILL] * 3 + [0], codes
    failed = job_metas(root, "failed")
    assert [m["original_name"] for m in failed] == ["loop.jsonl"] and failed[0]["attempts"] == 3
    reason = (root / "queue" / "failed" / failed[0]["id"] / "reason.txt").read_text()
    assert "daemon ended 3 times" in reason and f"training_queue.py retry {failed[0]['id']}" in reason
    assert check_home(Home.at(root), expect_files=["loop.jsonl", "ok.jsonl"]) == []


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL])
def test_a_trainer_that_segfaults_or_is_oom_killed_is_retried_then_failed_with_a_reason(tmp_path, sig):
    root, env = stand_in_home(tmp_path, max_attempts=2)
    drop(root, "a.jsonl", {"signal": int(sig)})
    drop(root, "b.jsonl", {"signal": int(sig), "once": str(tmp_path / "b-once"), "steps": 1})
    res = run_daemon(root, env)
    assert res.returncode == 0, res.stderr[-3000:]
    failed = job_metas(root, "failed")
    assert [m["original_name"] for m in failed] == ["a.jsonl"] and failed[0]["attempts"] == 2
    reason = (root / "queue" / "failed" / failed[0]["id"] / "reason.txt").read_text()
    assert f"killed_by_signal_{int(sig)}" in reason and "giving up" in reason
    done = job_metas(root, "done")
    assert [m["original_name"] for m in done] == ["b.jsonl"] and done[0]["attempts"] == 1  # retried once, then ok
    assert check_home(Home.at(root), expect_files=["a.jsonl", "b.jsonl"]) == []


# ------------------------------------------------------------------------------------------------ orphans
@pytest.mark.slow
def test_killing_the_daemon_alone_stops_its_trainer_with_a_checkpoint(tmp_path, tiny_model):
    from conftest import chat_lines

    root = tmp_path / "home"
    root.mkdir()
    write_config(root, base_model=str(tiny_model), max_length=96, batch_size=2, save_steps=1000, epochs=1,
                 stable_seconds=0.2, stop_grace_s=20.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAININGD_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    drop(root, "chat.jsonl", lines=chat_lines(120))
    daemon = subprocess.Popen([*DAEMON, "--home", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env, cwd=REPO)
    progress = root / "status" / "trainer_progress.json"

    def trainer_status() -> str | None:
        try:
            return json.loads(progress.read_text()).get("status")
        except (OSError, ValueError):
            return None

    def wait_status(wanted: str) -> None:
        deadline = time.monotonic() + 240
        while trainer_status() != wanted:
            assert time.monotonic() < deadline, f"the trainer never reported {wanted!r}"
            time.sleep(0.1)

    try:
        wait_status("training")  # then pause it, so that it cannot finish before the kill
        subprocess.run([sys.executable, str(REPO / "training_controller.py"), "--home", str(root), "pause"],
                       env=env, cwd=REPO, check=True, capture_output=True)
        wait_status("paused")
        trainer = psutil.Process(json.loads((root / ".trainer.json").read_text())["pid"])
        daemon.kill()
        daemon.wait()
        trainer.wait(timeout=120)  # psutil.TimeoutExpired here: an orphan kept running
    finally:
        if daemon.poll() is None:
            daemon.kill()
    checkpoints = list((root / "current_model" / "checkpoints").glob("*/step-*/COMPLETE"))
    assert checkpoints, "the orphaned trainer stopped without a checkpoint"
    res = run_daemon(root, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in (root / "logs" / "training_output.log").read_text()
    assert check_home(Home.at(root), expect_files=["chat.jsonl"]) == []
    assert daemon_log(root)
