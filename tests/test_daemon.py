"""The daemon: config errors, single instance, status file, exit-code handling, steering, end to end.

Run: .venv/bin/python -m pytest tests/test_daemon.py -q      (``-m "not slow"`` leaves out real training)

Every test runs ``training_daemon.py`` as a real subprocess on a temporary home. The exit-code tests
start a small contract trainer (a real process speaking the trainer's file protocol) through
``TRAININGD_TRAINER``, because the real trainer has no way to be told to crash or ignore a stop; the
tests marked slow run the real trainer on the tiny model.
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

from conftest import chat_lines, wait_for, write_config, write_jsonl
from trainingd.contracts.layer_activity import read_layer_activity
from trainingd.contracts.requests import write_request
from trainingd.paths import Home
from trainingd.jobqueue import JobQueue

REPO = Path(__file__).resolve().parent.parent
DAEMON = [sys.executable, str(REPO / "training_daemon.py")]

# The stand-in trainer: a real process speaking the trainer's contract (tests/tools/stand_in_trainer.py).
# What it does comes from the first line of its dataset: {"stand_in": {...}}.
STAND_IN = REPO / "tests" / "tools" / "stand_in_trainer.py"


def strict_json(path: Path) -> dict:
    def refuse(token: str):
        raise AssertionError(f"{path.name} holds {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def bare_home(tmp_path: Path, **config) -> Path:
    """A home without a model: for tests whose trainer is the contract trainer (or none)."""
    root = tmp_path / "home"
    root.mkdir()
    write_config(root, **{"max_attempts": 2, "stop_grace_s": 30.0, **config})
    return root


@pytest.fixture
def contract_env() -> dict:
    return {**os.environ, "TRAININGD_TRAINER": str(STAND_IN), "HF_HUB_OFFLINE": "1"}


def drop(root: Path, name: str, spec: dict | None = None, lines: list | None = None) -> None:
    """Drop a file into the inbox the way producers should: write a .tmp, then rename."""
    records = ([{"stand_in": spec}] if spec is not None else []) + (lines or [])
    tmp = write_jsonl(root / "inbox" / f".{name}.tmp", records)
    tmp.rename(root / "inbox" / name)


def run_once(root: Path, env: dict | None = None, *extra: str, limit_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*DAEMON, "--home", str(root), "--once", *extra], capture_output=True, text=True,
                          env=env or {**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=limit_s)


def reap(proc: subprocess.Popen) -> tuple[str, str]:
    """Kill a daemon a test left running (a failed assertion) and collect its output."""
    if proc.poll() is None:
        proc.kill()
    return proc.communicate(timeout=30)


def start(root: Path, env: dict | None = None, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*DAEMON, "--home", str(root), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or {**os.environ, "HF_HUB_OFFLINE": "1"})


def status(root: Path) -> dict:
    return strict_json(root / "status" / "training_status.json")


def acked(root: Path, req_id: str) -> dict | None:
    try:
        st = status(root)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return next((a for a in st["control"]["acks"] if a["id"] == req_id), None)


def folder_jobs(root: Path, state: str) -> list[str]:
    return [j.id for j in JobQueue(Home.at(root)).jobs([state])]


# ---------------------------------------------------------------------------------------------- start-up
def test_daemon_never_imports_torch():
    code = ("import sys, trainingd.daemon.loop, trainingd.daemon.intake, trainingd.contracts.status; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_mistyped_config_key_exits_3_naming_the_key(tmp_path):
    root = bare_home(tmp_path)
    write_config(root, learnig_rate=0.1)
    res = run_once(root)
    assert res.returncode == 3
    assert "learnig_rate" in res.stderr and "learning_rate" in res.stderr
    log = Home(root).daemon_log.read_text()
    assert "learnig_rate" in log
    st = status(root)
    assert st["status"] == "error" and "learnig_rate" in st["last_error"]["message"]


def test_missing_base_model_exits_3_naming_base_model(tmp_path):
    root = bare_home(tmp_path, base_model=str(tmp_path / "no-such-model"))
    res = run_once(root)
    assert res.returncode == 3 and "base_model" in res.stderr


def test_empty_folder_is_initialised_as_a_home(tmp_path):
    root = tmp_path / "new" / "home"
    res = run_once(root)
    assert res.returncode == 0, res.stderr
    home = Home.at(root)
    assert all(d.is_dir() for d in home.runtime_dirs())
    assert json.loads(home.config.read_text())["base_model"] == "embedded:tiny-qwen3"
    assert not home.pid.exists(), "the pid file goes with the daemon"


def test_second_daemon_on_the_same_home_exits_75(tmp_path):
    root = bare_home(tmp_path)
    first = start(root)
    try:
        wait_for(lambda: (root / ".daemon.pid").exists(), "the first daemon to start")
        res = run_once(root)
        assert res.returncode == 75
        assert f"trainingd daemon already running for {root.resolve()} (pid {first.pid})" in res.stderr
    finally:
        first.terminate()
        first.communicate(timeout=30)
    assert first.returncode == 0


def test_status_seq_increases_across_reads_and_restarts_and_has_every_key(tmp_path):
    root = bare_home(tmp_path)
    proc = start(root)
    seqs: list[int] = []
    try:
        wait_for(lambda: (root / "status" / "training_status.json").exists(), "the first status")
        while len(seqs) < 5:
            seq = status(root)["seq"]
            assert not seqs or seq >= seqs[-1], "seq went backwards"
            if not seqs or seq > seqs[-1]:
                seqs.append(seq)
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    last = status(root)
    assert last["status"] == "stopped" and last["seq"] >= seqs[-1]
    run_once(root)
    after = status(root)
    assert after["seq"] > last["seq"], "seq continues across a restart"
    assert after["daemon"]["pid"] != last["daemon"]["pid"]
    top = {"schema_version", "seq", "updated_at", "daemon", "status", "status_detail", "job", "metrics", "prepare",
           "queue", "model", "control", "last_error", "current_step", "total_steps", "loss", "current_file",
           "model_display_name", "layer_activity_summary"}
    assert top <= set(after)
    assert after["schema_version"] == 1
    assert set(after["daemon"]) >= {"pid", "version", "started_at", "home"}
    assert set(after["metrics"]) >= {"loss", "loss_ema", "learning_rate", "grad_norm", "eval_loss", "tokens_per_s",
                                     "seconds_per_step", "eta_seconds"}
    assert after["queue"] == {"pending": {"high": 0, "normal": 0, "low": 0}, "processing": 0, "done": 0, "failed": 0}
    assert set(after["model"]) >= {"base", "adapter", "model_display_name"}
    assert set(after["control"]) >= {"paused", "stopping", "last_request", "last_ack", "acks"}


# ---------------------------------------------------------------------------------------------- trainer exits
def test_training_status_merges_progress_without_nan_and_steering_is_acknowledged(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "long run.jsonl", {"steps": 10**9})
    proc = start(root, contract_env)
    try:
        st = wait_for(lambda: (s := _try_status(root)) and s["status"] == "training" and s["job"] and
                      (s["job"]["step"] or 0) > 2 and s, "training to show in the status")
        assert st["job"]["file"] == "long run.jsonl" and st["current_file"] == "long run.jsonl"
        assert st["current_step"] == st["job"]["step"] and st["total_steps"] == 1000
        assert st["metrics"]["loss"] is None and st["metrics"]["loss_ema"] is None  # NaN/inf from the trainer
        assert st["loss"] is None and st["metrics"]["learning_rate"] == 1e-3
        assert st["prepare"] == {"phase": "tokenize", "lines_done": 3, "lines_total": 3}
        assert st["queue"]["processing"] == 1
        assert st["layer_activity_summary"]["top"] == [{"name": "model.layers.0.mlp.up_proj"}]
        pause = write_request(Home.at(root), "pause")
        assert wait_for(lambda: acked(root, pause.id), "pause ack")["result"] == "paused"
        assert status(root)["control"]["paused"] is True
        resume = write_request(Home.at(root), "resume")
        assert wait_for(lambda: acked(root, resume.id), "resume ack")["result"] == "resumed"
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training again")
        stop = write_request(Home.at(root), "stop")
        proc.wait(timeout=60)
    finally:
        out, err = reap(proc)
    assert proc.returncode == 0, err
    final = status(root)
    assert final["status"] == "stopped"
    assert any(a["id"] == stop.id and a["result"] == "stopped" for a in final["control"]["acks"])
    (job,) = JobQueue(Home.at(root)).jobs(["pending"])
    assert job.meta["original_name"] == "long run.jsonl" and job.meta["attempts"] == 0
    assert not (root / ".daemon.pid").exists()


def _try_status(root: Path) -> dict | None:
    try:
        return status(root)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def test_exit_codes_map_to_queue_states(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "a-bad.jsonl", {"exit": 4, "name": "data_error", "reason": "line 3: not valid JSON",
                               "details": ["line 3: Expecting value", "fix the line and retry"]})
    drop(root, "b-ok.jsonl", {"exit": 0, "name": "ok"})
    drop(root, "c-crash.jsonl", {"exit": 1, "name": "crash", "print": "CRASH-MARKER-42"})
    drop(root, "d-mismatch.jsonl", {"exit": 7, "name": "checkpoint_mismatch", "reason": "checkpoint of other data"})
    res = run_once(root, contract_env)
    assert res.returncode == 0, res.stderr
    q = JobQueue(Home.at(root))
    by_name = {j.meta["original_name"]: j for j in q.jobs()}
    assert by_name["b-ok.jsonl"].state == "done" and by_name["b-ok.jsonl"].meta["result"] == {"steps": 1}
    bad = by_name["a-bad.jsonl"]
    assert bad.state == "failed"
    reason = (bad.dir / "reason.txt").read_text()
    assert "line 3: not valid JSON" in reason and "fix the line and retry" in reason
    crash = by_name["c-crash.jsonl"]
    assert crash.state == "failed" and crash.meta["attempts"] == 2  # max_attempts=2 in bare_home
    assert "CRASH-MARKER-42" in (crash.dir / "reason.txt").read_text()
    assert by_name["d-mismatch.jsonl"].state == "failed"
    assert res.stderr.count("trainer exited crash") == 2
    history = [json.loads(line) for line in (root / "status" / "history.jsonl").read_text().splitlines()]
    assert [h["state"] for h in history] == ["failed", "done", "failed", "failed"]
    assert status(root)["last_error"]["job_id"] == by_name["d-mismatch.jsonl"].id


def test_config_error_from_the_trainer_requeues_and_exits_3(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "x.jsonl", {"exit": 3, "name": "config_error", "reason": "config key 'lora.r' is locked"})
    res = run_once(root, contract_env)
    assert res.returncode == 3
    assert len(folder_jobs(root, "pending")) == 1 and folder_jobs(root, "failed") == []
    assert "lora.r" in status(root)["last_error"]["message"]


def test_skip_fails_the_job_with_the_skip_reason_and_the_next_job_runs(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "1-long.jsonl", {"steps": 10**9})
    drop(root, "2-short.jsonl", {"steps": 3})
    proc = start(root, contract_env, "--max-jobs", "2")
    try:
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training")
        skip = write_request(Home.at(root), "skip")
        assert wait_for(lambda: acked(root, skip.id), "skip ack")["result"] == "skipped"
        proc.wait(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == 0
    q = JobQueue(Home.at(root))
    by_name = {j.meta["original_name"]: j for j in q.jobs()}
    assert by_name["1-long.jsonl"].state == "failed"
    assert (by_name["1-long.jsonl"].dir / "reason.txt").read_text().strip() == \
        "skipped by user request; adapter changes discarded"
    assert by_name["2-short.jsonl"].state == "done"


def test_stop_ladder_terminates_a_trainer_that_ignores_stop(tmp_path, contract_env):
    root = bare_home(tmp_path, stop_grace_s=0.5)
    drop(root, "stubborn.jsonl", {"ignore_stop": True})
    proc = start(root, contract_env)
    try:
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training")
        (root / ".stop").touch()
        proc.wait(timeout=60)
    finally:
        out, err = reap(proc)
    assert proc.returncode == 0, err
    assert "sending SIGTERM" in err
    (job,) = JobQueue(Home.at(root)).jobs(["pending"])
    assert job.meta["attempts"] == 0, "a stop is not the job's fault"
    assert not (root / ".stop").exists(), ".stop is removed once stopped, so the next start runs"


def test_sigterm_to_the_daemon_stops_the_trainer_and_requeues_at_the_head(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "1-first.jsonl", {"steps": 10**9})
    drop(root, "2-second.jsonl", {"steps": 10**9})
    proc = start(root, contract_env)
    try:
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == 0
    pending = JobQueue(Home.at(root)).jobs(["pending"])
    assert [j.meta["original_name"] for j in pending] == ["1-first.jsonl", "2-second.jsonl"]
    assert JobQueue(Home.at(root)).claim_next().meta["original_name"] == "1-first.jsonl"


# ---------------------------------------------------------------------------------------------- real trainer
def adapter_bytes(root: Path) -> bytes:
    return (root / "current_model" / "adapter_model.safetensors").read_bytes()


def trained_ids(root: Path) -> list[str]:
    return [t["job_id"] for t in json.loads((root / "current_model" / "adapter_state.json").read_text())["trained"]]


@pytest.mark.slow
def test_end_to_end_files_dropped_into_inbox_are_trained_and_duplicates_are_not(home):
    drop(home, "first chat.jsonl", lines=chat_lines(24, seed=1))
    res = run_once(home, None, "--max-jobs", "1")
    assert res.returncode == 0, res.stderr
    (first,) = folder_jobs(home, "done")
    after_first = adapter_bytes(home)
    drop(home, "second.jsonl", lines=chat_lines(24, seed=2))
    drop(home, "first again.jsonl", lines=chat_lines(24, seed=1))  # same bytes as the first file
    bad = write_jsonl(home / "inbox" / ".bad.tmp", chat_lines(3))
    bad.write_text(bad.read_text() + "{not json\n")
    bad.rename(home / "inbox" / "zz broken.jsonl")
    res = run_once(home)
    assert res.returncode == 0, res.stderr
    q = JobQueue(Home.at(home))
    by_name = {j.meta["original_name"]: j for j in q.jobs()}
    assert by_name["second.jsonl"].state == "done"
    assert adapter_bytes(home) != after_first, "the second file changes the adapter"
    dup = by_name["first again.jsonl"]
    assert dup.state == "done" and dup.meta["duplicate_of"] == first
    assert f"is a duplicate of job {first}" in res.stderr
    assert trained_ids(home) == [first, by_name["second.jsonl"].id]
    broken = by_name["zz broken.jsonl"]
    assert broken.state == "failed"
    assert "line 4" in (broken.dir / "reason.txt").read_text()
    st = status(home)
    assert st["status"] == "stopped" and st["queue"]["done"] == 3 and st["queue"]["failed"] == 1
    layers = read_layer_activity(home)
    assert layers["job_id"] == by_name["second.jsonl"].id and len(layers["modules"]) == 14


@pytest.mark.slow
def test_crash_recovery_finishes_the_job_exactly_once(home):
    write_config(home, save_steps=2)
    drop(home, "long.jsonl", lines=chat_lines(120, seed=3))
    proc = start(home)
    try:
        wait_for(lambda: list((home / "current_model" / "checkpoints").glob("*/*/COMPLETE")),
                 "a complete checkpoint", limit_s=180)
        trainer_pid = strict_json(home / "status" / "trainer_progress.json")["pid"]
        proc.kill()
        os.killpg(trainer_pid, signal.SIGKILL)
    finally:
        reap(proc)
    (job_id,) = folder_jobs(home, "processing")
    assert not (home / "current_model" / "adapter_state.json").exists() or job_id not in trained_ids(home)
    res = run_once(home)
    assert res.returncode == 0, res.stderr
    assert "resuming it first" in res.stderr
    assert folder_jobs(home, "done") == [job_id]
    assert folder_jobs(home, "processing") == [] and folder_jobs(home, "pending") == []
    assert trained_ids(home).count(job_id) == 1
    assert "resumed from" in (home / "logs" / "training_output.log").read_text(), "resumed from its checkpoint"


# ---------------------------------------------------------------------------------------------- recovery, dedupe
def write_trained(root: Path, entries: list[dict]) -> None:
    state = root / "current_model" / "adapter_state.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"base_model": "x", "trained": entries}))


def test_start_up_completes_published_jobs_and_recovers_incoming(tmp_path, contract_env):
    root = bare_home(tmp_path)
    q = JobQueue(Home.at(root))
    q.ensure_dirs()
    published = q.add(write_jsonl(tmp_path / "published.jsonl", [{"stand_in": {"exit": 1, "name": "crash"}}]))
    q.claim_next()
    write_trained(root, [{"job_id": published.id, "sha256": published.meta["sha256"]}])
    leftover = q.incoming / "000009-left"
    leftover.mkdir()
    write_jsonl(leftover / "left.jsonl", [{"stand_in": {"exit": 0, "name": "ok"}}])
    res = run_once(root, contract_env)
    assert res.returncode == 0, res.stderr
    assert folder_jobs(root, "done") == [published.id, "000009-left"]
    assert "published before a crash" in res.stderr
    assert res.stderr.count("trainer started") == 1, "the published job is not trained again"
    assert list(q.incoming.iterdir()) == []


def test_dedupe_skips_trained_content_unless_forced_or_disabled(tmp_path, contract_env):
    root = bare_home(tmp_path)
    q = JobQueue(Home.at(root))
    q.ensure_dirs()
    data = write_jsonl(tmp_path / "same.jsonl", [{"stand_in": {"exit": 0, "name": "ok"}}])
    dup = q.add(data)
    forced = q.add(data, force=True)
    from trainingd.atomic_ops import file_sha256 as sha256_file

    write_trained(root, [{"job_id": "000000-earlier", "sha256": sha256_file(data)}])
    res = run_once(root, contract_env)
    assert res.returncode == 0, res.stderr
    assert q.get(dup.id).meta["duplicate_of"] == "000000-earlier"
    assert q.get(forced.id).meta["duplicate_of"] is None
    assert res.stderr.count("trainer started") == 1 and f"job {forced.id}: trainer started" in res.stderr
    write_config(root, dedupe=False)
    again = q.add(data)
    res = run_once(root, contract_env)
    assert res.returncode == 0, res.stderr
    assert q.get(again.id).state == "done" and q.get(again.id).meta["duplicate_of"] is None
    assert f"job {again.id}: trainer started" in res.stderr


def test_a_trainer_left_by_a_killed_daemon_is_ended_before_the_job_resumes(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "long.jsonl", {"steps": 10**9})
    first = start(root, contract_env)
    try:
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training")
        orphan = _try_progress(root)["pid"]
    finally:
        first.kill()
        first.communicate(timeout=30)
    os.kill(orphan, 0)  # the contract trainer does not watch its parent: it is still running
    second = start(root, contract_env)
    try:
        wait_for(lambda: (p := _try_progress(root)) and p["pid"] != orphan, "a new trainer on the job")
        assert not _alive(orphan)
        assert [j.meta["original_name"] for j in JobQueue(Home.at(root)).jobs(["processing"])] == ["long.jsonl"]
    finally:
        second.terminate()
        out, err = second.communicate(timeout=60)
    assert "still running" in err and second.returncode == 0


def _try_progress(root: Path) -> dict | None:
    try:
        return json.loads((root / "status" / "trainer_progress.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes (its parent, the killed daemon, cannot reap it any more)
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
