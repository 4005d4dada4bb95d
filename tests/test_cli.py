"""The command-line tools as a user runs them: real subprocesses on real homes.

    .venv/bin/pytest tests/test_cli.py -x -q

A running daemon is, by contract, "a process holding the flock on .daemon.lock"; where a test needs one
without training, a child process holds that lock (``lock_holder``) and the test plays the daemon's part of
the control protocol (acknowledging a request in the status file) by writing that file itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import chat_lines, write_jsonl
from trainingd.atomic_ops import atomic_write_json
from trainingd.contracts.requests import read_requests
from trainingd.instance import is_daemon_running
from trainingd.paths import Home
from trainingd.jobqueue import JobQueue

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def run(script: str, *args: str, home: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a top-level tool (``training_queue.py``...) or ``-m trainingd`` with --home."""
    cmd = [PY, "-m", "trainingd"] if script == "trainingd" else [PY, str(REPO / script)]
    cmd += list(args)
    if home is not None:
        cmd += ["--home", str(home)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


@pytest.fixture
def qhome(tmp_path) -> Path:
    """An initialised home with no model (the queue and controller never need one)."""
    h = tmp_path / "h"
    r = run("trainingd", "init", home=h)
    assert r.returncode == 0, r.stderr
    return h


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "src" / "my data ü.jsonl", chat_lines(5))


@pytest.fixture
def lock_holder(qhome):
    """A child process holding the daemon's flock, as a running daemon does; released at teardown."""
    code = ("import fcntl, sys; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()")
    proc = subprocess.Popen([PY, "-c", code, str(qhome / ".daemon.lock")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.stdin.close()
        proc.wait(timeout=10)


# --- trainingd init ------------------------------------------------------------------------------

def test_init_creates_runtime_folders_and_default_config(tmp_path):
    h = tmp_path / "new home"
    r = run("trainingd", "init", home=h)
    assert r.returncode == 0, r.stderr
    for d in Home(h).runtime_dirs():
        assert d.is_dir(), d
    assert json.loads((h / "config.json").read_text())["base_model"] == "embedded:tiny-qwen3"
    assert "wrote default config" in r.stdout and "created" in r.stdout


def test_init_never_overwrites_an_existing_config(tmp_path):
    h = tmp_path / "h"
    h.mkdir()
    mine = '{"batch_size": 8}\n'
    (h / "config.json").write_text(mine)
    r = run("trainingd", "init", "--json", home=h)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["config"] == "kept"
    assert (h / "config.json").read_text() == mine
    assert (h / "queue" / "pending" / "normal").is_dir()


# --- training_queue.py ---------------------------------------------------------------------------

def test_queue_add_copies_the_file_and_list_shows_it(qhome, data):
    r = run("training_queue.py", "add", str(data), "--priority", "high", home=qhome)
    assert r.returncode == 0, r.stderr
    assert data.exists(), "add copies: the original stays where it was"
    (job,) = JobQueue(Home(qhome)).jobs()
    assert job.state == "pending" and job.priority == "high" and job.meta["source"] == "cli"
    assert job.data_file.read_bytes() == data.read_bytes()
    assert job.data_file.name == data.name

    listed = json.loads(run("training_queue.py", "list", "--json", home=qhome).stdout)["jobs"]
    assert [(j["id"], j["state"], j["priority"], j["original_name"]) for j in listed] == \
        [(job.id, "pending", "high", data.name)]
    assert listed[0]["size_bytes"] == data.stat().st_size and len(listed[0]["sha256"]) == 64
    text = run("training_queue.py", "list", home=qhome).stdout
    assert job.id in text and data.name in text and listed[0]["sha256"][:12] in text


def test_queue_add_converts_a_json_array_and_refuses_other_json_with_how(qhome, tmp_path):
    records = [{"instruction": f"Add {i} and 1", "input": "", "output": str(i + 1)} for i in range(3)]
    array = tmp_path / "alpaca.json"
    array.write_text(json.dumps(records, indent=2))
    r = run("training_queue.py", "add", str(array), home=qhome)
    assert r.returncode == 0, r.stderr
    assert "converted alpaca.json (3 records)" in r.stdout and array.exists()
    (job,) = JobQueue(Home(qhome)).jobs()
    assert job.data_file.name == "alpaca.jsonl" and job.meta["converted_from"] == "alpaca.json"
    assert [json.loads(line) for line in job.data_file.read_text().splitlines()] == records
    assert not list(qhome.glob(".trainingd-convert-*"))

    single = tmp_path / "one.json"
    single.write_text(json.dumps(records[0]))
    r = run("training_queue.py", "add", str(single), home=qhome)
    assert r.returncode == 1 and "jq -c '.[]' one.json > one.jsonl" in r.stderr, r.stderr
    assert len(JobQueue(Home(qhome)).jobs()) == 1


@pytest.mark.parametrize("bad, message", [("missing.jsonl", "no such file"), ("", "is a folder")])
def test_queue_add_refuses_missing_files_and_folders(qhome, tmp_path, bad, message):
    r = run("training_queue.py", "add", str(tmp_path / bad), home=qhome)
    assert r.returncode == 1
    assert message in r.stderr
    assert JobQueue(Home(qhome)).jobs() == []


def test_queue_status_counts_per_state_and_priority(qhome, data):
    for prio in ("high", "low", "low"):
        assert run("training_queue.py", "add", str(data), "--priority", prio, home=qhome).returncode == 0
    counts = json.loads(run("training_queue.py", "status", "--json", home=qhome).stdout)["counts"]
    assert counts == {"pending": {"high": 1, "normal": 0, "low": 2}, "processing": 0, "done": 0, "failed": 0}
    assert "low       2" in run("training_queue.py", "status", home=qhome).stdout


def test_queue_remove_then_retry_round_trip_keeps_the_file(qhome, data):
    job_id = JobQueue(Home(qhome)).add(data).id
    r = run("training_queue.py", "remove", job_id, home=qhome)
    assert r.returncode == 0, r.stderr
    failed = json.loads(run("training_queue.py", "list", "--state", "failed", "--json", home=qhome).stdout)["jobs"]
    assert [j["id"] for j in failed] == [job_id] and failed[0]["reason"] == "removed by user"
    assert "removed by user" in run("training_queue.py", "list", home=qhome).stdout

    assert run("training_queue.py", "retry", job_id, home=qhome).returncode == 0
    job = JobQueue(Home(qhome)).get(job_id)
    assert job.state == "pending" and job.data_file.read_bytes() == data.read_bytes()


@pytest.mark.parametrize("command", ["remove", "retry"])
def test_queue_unknown_id_is_an_error(qhome, command):
    r = run("training_queue.py", command, "000042-nothing", home=qhome)
    assert r.returncode == 1
    assert "no job" in r.stderr


def test_queue_remove_of_running_job_points_to_skip(qhome, data):
    q = JobQueue(Home(qhome))
    q.add(data)
    job = q.claim_next()
    r = run("training_queue.py", "remove", job.id, home=qhome)
    assert r.returncode == 1
    assert "training_controller.py skip" in r.stderr
    assert q.get(job.id).state == "processing"


def test_queue_remove_skip_if_running_writes_a_skip_request(qhome, data, lock_holder):
    q = JobQueue(Home(qhome))
    q.add(data)
    job = q.claim_next()
    r = run("training_queue.py", "remove", job.id, "--skip-if-running", "--json", home=qhome)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (req,) = read_requests(Home(qhome))
    assert req.action == "skip" and req.id == out["skip_request"]


def test_queue_remove_skip_if_running_without_daemon_is_refused(qhome, data):
    q = JobQueue(Home(qhome))
    q.add(data)
    job = q.claim_next()
    r = run("training_queue.py", "remove", job.id, "--skip-if-running", home=qhome)
    assert r.returncode == 1 and "no daemon running" in r.stderr
    assert read_requests(Home(qhome)) == []


# --- training_controller.py ----------------------------------------------------------------------

def test_lock_probe_sees_a_held_lock_and_never_creates_the_file(qhome, lock_holder, tmp_path):
    assert is_daemon_running(Home(qhome))
    lock_holder.stdin.close()
    lock_holder.wait(timeout=10)
    assert not is_daemon_running(Home(qhome))
    empty = Home(tmp_path / "empty")
    assert not is_daemon_running(empty)
    assert not empty.lock.exists()


@pytest.mark.parametrize("action", ["pause", "resume", "skip"])
def test_request_without_daemon_is_refused_and_writes_nothing(qhome, action):
    r = run("training_controller.py", action, home=qhome)
    assert r.returncode == 1
    assert f"no daemon running for {qhome.resolve()}" in r.stderr
    assert read_requests(Home(qhome)) == []


def test_stop_without_daemon_writes_nothing(qhome):
    r = run("training_controller.py", "stop", home=qhome)
    assert r.returncode == 0 and "nothing to stop" in r.stdout
    assert read_requests(Home(qhome)) == []


def test_request_with_daemon_writes_a_control_request(qhome, lock_holder):
    r = run("training_controller.py", "pause", "--json", home=qhome)
    assert r.returncode == 0, r.stderr
    (req,) = read_requests(Home(qhome))
    assert req.action == "pause" and req.id == json.loads(r.stdout)["id"]


def _ack_status(request_id: str, action: str) -> dict:
    ack = {"id": request_id, "action": action, "result": "paused", "at": "2026-11-30T00:00:00Z"}
    return {"schema_version": 1, "seq": 7, "status": "paused",
            "control": {"paused": True, "last_ack": ack, "acks": [ack]}}


def test_wait_returns_once_the_daemon_acknowledges(qhome, lock_holder):
    proc = subprocess.Popen([PY, str(REPO / "training_controller.py"), "pause", "--wait", "--timeout", "60",
                             "--json", "--home", str(qhome)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    home = Home(qhome)
    try:
        requests = []
        while not requests:  # the controller writes its request, then polls the status file for the ack
            assert proc.poll() is None, proc.communicate()
            requests = read_requests(home)
            time.sleep(0.05)
        atomic_write_json(home.status, _ack_status(requests[0].id, "pause"))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["acked"] and result["ack"]["id"] == requests[0].id


def test_wait_times_out_with_exit_4(qhome, lock_holder):
    r = run("training_controller.py", "resume", "--wait", "--timeout", "0.5", home=qhome)
    assert r.returncode == 4
    assert "timed out" in r.stderr


def test_wait_fails_when_the_daemon_goes_away_unacknowledged(qhome, lock_holder):
    proc = subprocess.Popen([PY, str(REPO / "training_controller.py"), "skip", "--wait", "--timeout", "60",
                             "--home", str(qhome)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not read_requests(Home(qhome)):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        lock_holder.stdin.close()  # the "daemon" exits without acknowledging
        lock_holder.wait(timeout=10)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert "exited before acknowledging" in err


def _training_status() -> dict:
    return {
        "schema_version": 1, "seq": 42, "updated_at": "2026-11-30T01:02:03Z",
        "daemon": {"pid": 4242, "version": "0.1.0", "started_at": "2026-11-30T01:00:00Z", "home": "/x"},
        "status": "training", "status_detail": "epoch 1",
        "job": {"id": "000003-chat", "file": "chat.jsonl", "sha256": "ab" * 32, "priority": "normal",
                "started_at": "2026-11-30T01:01:00Z", "epoch": 1.0, "step": 30.0, "total_steps": 120, "progress": 0.25,
                "examples_done": 30, "tokens_seen": 1234},
        "metrics": {"loss": 1.23456, "loss_ema": 1.3, "learning_rate": 0.0002, "grad_norm": 0.5, "eval_loss": None,
                    "tokens_per_s": 2500.0, "seconds_per_step": 0.1, "eta_seconds": 125},
        "prepare": None,
        "queue": {"pending": {"high": 0, "normal": 1, "low": 0}, "processing": 1, "done": 0, "failed": 0},
        "model": {"base": "tiny", "adapter": None, "model_display_name": "tiny"},
        "control": {"paused": False, "stopping": False, "last_request": None, "last_ack": None, "acks": []},
        "last_error": {"message": "bad file x.jsonl", "job_id": "000002-x", "at": "2026-11-30T00:59:00Z"},
        "current_step": 30, "total_steps": 120, "loss": 1.23456, "current_file": "chat.jsonl",
        "model_display_name": "tiny",
    }


def test_status_summary_shows_progress_metrics_queue_and_missing_daemon(qhome, data):
    JobQueue(Home(qhome)).add(data, priority="low")
    atomic_write_json(Home(qhome).status, _training_status())
    r = run("training_controller.py", "status", home=qhome)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in ("daemon not running", "training", "000003-chat", "chat.jsonl", "step 30/120", "epoch 1\n", "25.0%",
                     "1.2346", "2.00e-04", "2500 tokens/s", "ETA 2m 05s", "paused:    no", "bad file x.jsonl",
                     "pending 1 (high 0, normal 0, low 1)"):
        assert expected in out, (expected, out)


def test_status_json_carries_status_queue_and_daemon_flag(qhome, data, lock_holder):
    job = JobQueue(Home(qhome)).add(data)
    atomic_write_json(Home(qhome).status, _training_status())
    r = run("training_controller.py", "status", "--json", home=qhome)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"status", "queue", "counts", "daemon_running"}
    assert out["daemon_running"] is True
    assert out["status"]["seq"] == 42
    assert [j["id"] for j in out["queue"]] == [job.id]
    assert out["counts"] == {"pending": {"high": 0, "normal": 1, "low": 0}, "processing": 0, "done": 0, "failed": 0}


def test_status_lists_the_newest_finished_jobs_and_counts_them_all(qhome, tmp_path):
    """done/ keeps a folder per job for ever: status read every job.json of it (0.3 s at 3,500 jobs, growing),
    and --watch did so every second. It lists the pending and running jobs and the newest 20 finished ones."""
    from trainingd.cli.controller import RECENT_FINISHED

    q = JobQueue(Home(qhome))
    for i in range(RECENT_FINISHED + 10):
        job = q.add(write_jsonl(tmp_path / "src" / f"f{i}.jsonl", chat_lines(2, seed=i)))
        assert q.claim_next().id == job.id
        if i % 5 == 4:
            q.fail(job, "broken on purpose")
        else:
            q.complete(job, result={"loss": 1.0})
    finished = [j.id for j in q.jobs(["done"])]
    waiting = q.add(write_jsonl(tmp_path / "src" / "next.jsonl", chat_lines(2, seed=99)))
    out = json.loads(run("training_controller.py", "status", "--json", home=qhome).stdout)
    assert out["counts"]["done"] == len(finished) == 24 and out["counts"]["failed"] == 6
    listed = [j["id"] for j in out["queue"]]
    assert listed[0] == waiting.id and listed[1:RECENT_FINISHED + 1] == finished[-RECENT_FINISHED:]
    assert len(listed) == 1 + RECENT_FINISHED + 6 and [j["state"] for j in out["queue"]].count("failed") == 6
    text = run("training_controller.py", "status", home=qhome).stdout
    assert "pending 1 (high 0, normal 1, low 0)  processing 0  done 24  failed 6" in text, text


def test_status_watch_redraws_until_ctrl_c(qhome):
    # A shell's background job starts with SIGINT ignored, and Python then keeps ignoring it: give the
    # command the default disposition a terminal would.
    proc = subprocess.Popen([PY, str(REPO / "training_controller.py"), "status", "--watch", "--home", str(qhome)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        seen = ""
        while seen.count("\033[2J") < 2:  # two full redraws
            chunk = proc.stdout.readline()
            assert chunk, proc.stderr.read()
            seen += chunk
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "daemon not running" in seen


@pytest.mark.parametrize("tool", [["training_controller.py"], ["training_queue.py"], ["config_validator.py"],
                                  ["trainingd"], ["training_controller.py", "pause"], ["training_queue.py", "add"]])
def test_every_tool_documents_its_exit_codes(tool):
    r = run(tool[0], *tool[1:], "--help")
    assert r.returncode == 0
    assert "exit codes:" in r.stdout and "2  usage" in r.stdout


def test_a_closed_pipe_is_not_an_error(qhome):
    proc = subprocess.Popen([PY, str(REPO / "training_queue.py"), "status", "--home", str(qhome)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `training_queue.py status | head -0`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert "Traceback" not in err


def test_usage_errors_exit_2(qhome):
    assert run("training_controller.py", "dance", home=qhome).returncode == 2
    assert run("training_queue.py", "add", "x", "--priority", "urgent", home=qhome).returncode == 2


def test_trainingd_dispatches_to_every_tool(qhome, data):
    assert run("trainingd", "queue", "add", str(data), home=qhome).returncode == 0
    counts = json.loads(run("trainingd", "queue", "status", "--json", home=qhome).stdout)["counts"]
    assert counts["pending"]["normal"] == 1
    assert json.loads(run("trainingd", "status", "--json", home=qhome).stdout)["daemon_running"] is False
    assert run("trainingd", "validate", home=qhome).stdout.startswith("ok")
    assert run("trainingd", "pause", home=qhome).returncode == 1
