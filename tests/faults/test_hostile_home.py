"""Nothing in a home stops the loop: one test per finding of the unattended issue, each with a real daemon.

    pytest tests/faults/test_hostile_home.py

The trainer is the stand-in of ``fault_helpers`` (real subprocesses, real files); each test breaks one folder of
the home the way a hostile user would and checks that the daemon keeps training, answering control requests and
writing its status, and that the doctor and ``state_tracker.py --check`` tell the truth about it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_helpers import DAEMON, REPO, daemon_log, drop, job_metas, run_daemon, stand_in_home
from trainingd.checks.health import consistency, run_checks
from trainingd.contracts.requests import write_request
from trainingd.paths import Home

pytestmark = pytest.mark.faults


def start(root: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*DAEMON, "--home", str(root), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    out, err = proc.communicate(timeout=30)
    return out + err


def status(root: Path) -> dict:
    try:
        return json.loads((root / "status" / "training_status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, limit_s: float = 60.0, what: str = "condition"):
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def acked(root: Path, req_id: str) -> dict | None:
    return next((a for a in (status(root).get("control") or {}).get("acks") or [] if a["id"] == req_id), None)


def done_names(root: Path) -> list[str]:
    return sorted(m["original_name"] for m in job_metas(root, "done"))


def fault_paths(doc: dict) -> list[str]:
    return [f.get("path") for f in doc.get("faults") or []]


# ------------------------------------------------------------------------------------------------ finding 1
def test_an_undecodable_inbox_name_fails_at_intake_and_the_jobs_behind_it_train(tmp_path):
    root, env = stand_in_home(tmp_path)
    (root / "inbox").mkdir()
    bad = os.path.join(os.fsencode(root / "inbox"), b"bad\xff\xfename.jsonl")
    with open(bad, "w") as f:
        f.write(json.dumps({"stand_in": {"steps": 1}}) + "\n")
    drop(root, "good.jsonl", {"steps": 1})
    out = run_daemon(root, env, limit_s=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert done_names(root) == ["good.jsonl"]
    (failed,) = job_metas(root, "failed")
    assert "UTF-8" in failed["reason"] and "rename" in failed["reason"].lower()
    # Kept, under a name that can be shown and typed; nothing of it is left in the inbox.
    folder = root / "queue" / "failed" / failed["id"]
    assert sorted(p.name for p in folder.iterdir() if p.name not in ("job.json", "reason.txt")) == \
        [failed["file"]]
    failed["file"].encode("utf-8")
    assert os.listdir(os.fsencode(root / "inbox")) == []
    text = daemon_log(root)
    assert "Logging error" not in out.stderr and "UnicodeEncodeError" not in text + out.stderr
    assert "rejected" in text and "bad\\xff\\xfename.jsonl" in text


def test_a_job_queued_by_the_cli_under_an_undecodable_name_trains_and_is_logged(tmp_path):
    """What the CLI (or an older intake) queued under a name that is not UTF-8 trains; nothing of it blocks."""
    root, env = stand_in_home(tmp_path)
    src = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"old\xffname.jsonl")))
    src.write_text(json.dumps({"stand_in": {"steps": 1}}) + "\n")
    added = subprocess.run([sys.executable, str(REPO / "training_queue.py"), "--home", str(root), "add", str(src)],
                           env=env, capture_output=True, text=True, errors="replace")
    assert added.returncode == 0, added.stderr
    drop(root, "good.jsonl", {"steps": 1})
    out = run_daemon(root, env, limit_s=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(job_metas(root, "done")) == 2 and job_metas(root, "failed") == []
    text = daemon_log(root)
    assert "Logging error" not in out.stderr and "UnicodeEncodeError" not in text + out.stderr
    assert "trainer started" in text and "old\\udcffname.jsonl" in text


# ------------------------------------------------------------------------------------------------ findings 2, 3
@pytest.mark.parametrize("kind", ["fifo", "folder", "socket", "link_out"])
def test_a_request_that_is_not_a_file_is_set_aside_and_control_keeps_working(tmp_path, kind):
    root, env = stand_in_home(tmp_path)
    requests = root / "control" / "requests"
    requests.mkdir(parents=True)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"id": "abc", "action": "stop", "created_at": time.time() + 60}))
    proc = start(root, env)
    sock = None
    try:
        wait_for(lambda: status(root).get("status") == "idle", what="the daemon to be idle")
        entry = requests / "00000000000000000000-pause-hostile.json"
        if kind == "fifo":
            os.mkfifo(entry)
        elif kind == "folder":
            entry.mkdir()
        elif kind == "socket":
            sock = socket.socket(socket.AF_UNIX)
            cwd = os.getcwd()
            os.chdir(requests)  # a socket's path is limited to 108 bytes: bind it by its relative name
            try:
                sock.bind(entry.name)
            finally:
                os.chdir(cwd)
        else:
            entry.symlink_to(outside)
        seq = status(root)["seq"]
        wait_for(lambda: status(root).get("seq", 0) > seq + 8, what="the status to keep updating")
        req = write_request(Home.at(root), "pause")
        wait_for(lambda: acked(root, req.id), what="the pause to be acknowledged")
        assert status(root)["status"] == "paused"
        assert not os.path.lexists(entry)  # set aside, so it is not looked at every tick
        kept = root / "control" / "rejected" / entry.name
        assert os.path.lexists(kept)
        assert outside.exists() and json.loads(outside.read_text())["action"] == "stop"  # never followed
        assert proc.poll() is None
    finally:
        text = stop(proc)
        if sock is not None:
            sock.close()
    log = daemon_log(root)
    assert log.count("control/rejected") == 1, text[-3000:]
    assert "internal error" not in log and "I/O error" not in log


# ------------------------------------------------------------------------------------------------ finding 4
@pytest.mark.parametrize("kind", ["file", "dangling_link"])
def test_an_inbox_that_is_not_a_folder_holds_intake_alone(tmp_path, kind):
    root, env = stand_in_home(tmp_path)
    proc = start(root, env)
    try:
        wait_for(lambda: status(root).get("status") == "idle", what="the daemon to be idle")
        inbox = root / "inbox"
        for _ in range(50):  # the daemon makes a missing inbox again: replace it between two of its scans
            inbox.rmdir()
            try:
                if kind == "file":
                    with open(inbox, "x") as f:
                        f.write("not a folder\n")
                else:
                    inbox.symlink_to(tmp_path / "nowhere")
                break
            except FileExistsError:
                continue
        wait_for(lambda: "inbox" in fault_paths(status(root)), what="the inbox fault in the status")
        fault = next(f for f in status(root)["faults"] if f["path"] == "inbox")
        assert fault["subsystem"] == "intake" and "mv" in fault["fix"]
        report = run_checks(Home.at(root))
        assert not report["ok"]
        assert any("inbox" in p["problem"] for r in report["checks"] for p in r["problems"])
        req = write_request(Home.at(root), "pause")
        wait_for(lambda: acked(root, req.id), what="the pause to be acknowledged")
        req = write_request(Home.at(root), "resume")
        wait_for(lambda: acked(root, req.id), what="the resume to be acknowledged")
        # Files added another way still train while the inbox is broken.
        subprocess.run([sys.executable, str(REPO / "training_queue.py"), "--home", str(root), "add",
                        str(_stand_in_file(tmp_path / "cli.jsonl"))], check=True, env=env, capture_output=True)
        wait_for(lambda: done_names(root) == ["cli.jsonl"], what="the added job to be done")
        assert os.path.lexists(inbox) and not inbox.is_dir()  # left alone: never replaced or followed
        inbox.unlink()
        inbox.mkdir()
        drop(root, "later.jsonl", {"steps": 1})
        wait_for(lambda: done_names(root) == ["cli.jsonl", "later.jsonl"], what="intake to recover")
        wait_for(lambda: not status(root).get("faults"), what="the fault to clear")
    finally:
        text = stop(proc)
    log = daemon_log(root)
    assert log.count("inbox is not a folder") == 1, text[-3000:]


def _stand_in_file(path: Path) -> Path:
    path.write_text(json.dumps({"stand_in": {"steps": 1}}) + "\n")
    return path


# ------------------------------------------------------------------------------------------------ finding 7
def test_sighup_with_config_json_deleted_keeps_the_running_configuration(tmp_path):
    root, env = stand_in_home(tmp_path, learning_rate=0.0001)
    proc = start(root, env)
    try:
        wait_for(lambda: status(root).get("status") == "idle", what="the daemon to be idle")
        (root / "config.json").unlink()
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (status(root).get("daemon") or {}).get("config_reload_error"), what="the reload error")
        assert "config.json" in status(root)["daemon"]["config_reload_error"]
        drop(root, "a.jsonl", {"steps": 1})
        wait_for(lambda: done_names(root) == ["a.jsonl"], what="the job to be done")
        command = json.loads((root / "control" / "trainer_command.json").read_text())
        assert command["config"]["learning_rate"] == 0.0001
    finally:
        text = stop(proc)
    assert "config reloaded" not in daemon_log(root), text[-2000:]


# ------------------------------------------------------------------------------------------------ finding 9
def test_max_jobs_runs_the_evaluation_due_for_the_last_job(tmp_path):
    base = tmp_path / "no-weights"  # a base the evaluator fails to load at once (the embedded one is built first)
    base.mkdir()
    (base / "config.json").write_text("{}\n")
    root, env = stand_in_home(tmp_path, evaluation={"after_each_job": True}, base_model=str(base))
    # The real evaluator runs (and fails: the stand-in leaves no adapter to load); what counts is that it ran
    # before the daemon left, and that the daemon waited for it.
    drop(root, "a.jsonl", {"steps": 1})
    out = run_daemon(root, env, "--max-jobs", "1", limit_s=180)
    assert done_names(root) == ["a.jsonl"]
    text = daemon_log(root)
    assert "evaluating the adapter after job" in text, out.stderr[-3000:]
    assert (root / "logs" / "eval_output.log").exists()
    assert text.index("evaluation after job") < text.index("--max-jobs 1 reached")


# ------------------------------------------------------------------------------------------------ liveness
def test_a_queue_head_that_does_not_move_while_idle_is_a_problem(tmp_path):
    root, env = stand_in_home(tmp_path, stall_after_s=2.0)
    proc = start(root, env)
    try:
        wait_for(lambda: status(root).get("status") == "idle", what="the daemon to be idle")
        req = write_request(Home.at(root), "pause")
        wait_for(lambda: acked(root, req.id), what="the pause to be acknowledged")
        from trainingd.jobqueue import JobQueue

        job = JobQueue(Home.at(root)).add(_stand_in_file(tmp_path / "stuck.jsonl"))
        # No job can be claimed now (its folder cannot be renamed into processing/), yet the daemon is idle.
        processing = root / "queue" / "processing"
        processing.rmdir()
        processing.write_text("")
        req = write_request(Home.at(root), "resume")
        wait_for(lambda: acked(root, req.id), what="the resume to be acknowledged")
        wait_for(lambda: (status(root).get("liveness") or {}).get("stalled"), what="the stall in the status")
        doc = status(root)
        assert doc["status"] == "idle" and doc["liveness"]["head"] == job.id
        assert any(f["subsystem"] == "queue" for f in doc["faults"])
        report = run_checks(Home.at(root))
        problems = [p for r in report["checks"] for p in r["problems"]]
        assert not report["ok"] and any(job.id in p["problem"] and "not moved" in p["problem"] for p in problems)
        state = consistency(Home.at(root))
        assert not state["ok"] and any("not moved" in p["problem"] for p in state["problems"])
        shown = subprocess.run([sys.executable, str(REPO / "training_controller.py"), "--home", str(root), "status"],
                               env=env, capture_output=True, text=True).stdout
        assert "stuck:" in shown and job.id in shown and "fault:     queue" in shown
        processing.unlink()
        processing.mkdir()
        wait_for(lambda: done_names(root) == ["stuck.jsonl"], what="the job to train once it can be claimed")
        wait_for(lambda: not (status(root).get("liveness") or {}).get("stalled"), what="the stall to clear")
        assert run_checks(Home.at(root))["ok"], run_checks(Home.at(root))
    finally:
        stop(proc)
    assert daemon_log(root).count("has not moved for") == 1


# ------------------------------------------------------------------------------------------------ finding 8
PROGRESS_THEN_DIE = r'''
import argparse, hashlib, json, os, shutil, signal, sys, time
from pathlib import Path
from trainingd.contracts.adapter_state import next_state, read_adapter_state, write_adapter_state
p = argparse.ArgumentParser()
for name in ("--home", "--job-id", "--dataset", "--reason-file", "--parent-pid"):
    p.add_argument(name)
a = p.parse_args()
spec = json.loads(open(a.dataset, encoding="utf-8").readline())["progress_then_die"]
home = Path(a.home)
folder = home / "current_model" / "checkpoints" / a.job_id
steps = sorted(folder.glob("step-*")) if folder.is_dir() else []
if len(steps) < spec["kills"]:
    step = folder / f"step-{(len(steps) + 1) * 10:06d}"
    step.mkdir(parents=True)
    (step / "COMPLETE").write_text("1\n")  # a checkpoint further on than the last one, then killed
    if spec.get("daemon"):
        os.kill(int(a.parent_pid), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
shutil.rmtree(folder)
model = home / "current_model"
sha = hashlib.sha256(open(a.dataset, "rb").read()).hexdigest()
write_adapter_state(model, next_state(read_adapter_state(model), entry={"job_id": a.job_id, "sha256": sha,
                    "file": os.path.basename(a.dataset), "steps": 1, "finished_at": time.time()},
                    base_model="stand-in", base_model_hash="stand-in", locked={}, model_name="stand-in"))
json.dump({"exit": "ok", "reason": "", "details": [], "summary": {"steps": 1}}, open(a.reason_file, "w"))
'''


def _progress_home(tmp_path: Path) -> tuple[Path, dict]:
    root, env = stand_in_home(tmp_path, max_attempts=3)
    script = tmp_path / "progress_then_die.py"
    script.write_text(PROGRESS_THEN_DIE)
    return root, {**env, "TRAININGD_TRAINER": str(script)}


def _drop_progress(root: Path, name: str, kills: int, daemon: bool) -> None:
    tmp = root / "inbox" / f".{name}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps({"progress_then_die": {"kills": kills, "daemon": daemon}}) + "\n")
    tmp.rename(root / "inbox" / name)


def test_trainer_kills_after_each_new_checkpoint_count_no_attempt(tmp_path):
    root, env = _progress_home(tmp_path)
    _drop_progress(root, "long.jsonl", kills=4, daemon=False)
    out = run_daemon(root, env, limit_s=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert done_names(root) == ["long.jsonl"] and job_metas(root, "failed") == []
    assert "no attempt counted" in daemon_log(root)


def test_a_crash_after_progress_counts_no_attempt_and_one_without_does():
    from trainingd import exit_codes as ec
    from trainingd.daemon.outcome import Facts, decide

    after_progress = decide(Facts(code=-9, job_id="000001-a", reason="", attempts=2, max_attempts=3, progressed=True))
    assert (after_progress.state, after_progress.attempts) == ("pending", 0)
    without = decide(Facts(code=ec.CRASH, job_id="000001-a", reason="", attempts=2, max_attempts=3))
    assert (without.state, without.attempts) == ("failed", 3)


def test_daemon_kills_after_each_new_checkpoint_count_no_attempt(tmp_path):
    root, env = _progress_home(tmp_path)
    _drop_progress(root, "long.jsonl", kills=4, daemon=True)
    for _ in range(5):
        run_daemon(root, env, limit_s=120)
        if done_names(root):
            break
    assert done_names(root) == ["long.jsonl"] and job_metas(root, "failed") == []


def test_the_checker_never_advises_deleting_the_checkpoints_a_retry_resumes_from(tmp_path):
    from trainingd.jobqueue import JobQueue

    root, env = stand_in_home(tmp_path)
    queue = JobQueue(Home.at(root))
    job = queue.claim_next() if queue.add(_stand_in_file(tmp_path / "long.jsonl")) else None
    queue.fail(job, "trainer failed 3 times (last: crash); giving up.")
    kept = root / "current_model" / "checkpoints" / job.id / "step-000010"
    kept.mkdir(parents=True)
    for name in ("COMPLETE", "adapter_config.json", "adapter_model.safetensors"):
        (kept / name).write_text("1\n")
    (kept / "manifest.json").write_text(json.dumps({"job_id": job.id}))
    for report in (consistency(Home.at(root)), run_checks(Home.at(root))):
        fixes = [p["fix"] for p in report.get("problems", [])] + [
            p["fix"] for r in report.get("checks", []) for p in r["problems"]]
        assert not any("rm " in f and job.id in f for f in fixes), fixes
