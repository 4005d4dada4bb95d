"""Never lose training: one test per hole of issue 12, each a real scenario with real processes and files.

    ./run_tests.sh tests/test_never_lose.py -q          (-m "not slow" leaves out the real trainer)

Most tests run the daemon with the contract trainer of ``test_daemon.py`` (``TRAININGD_TRAINER``), which can
do what the real trainer cannot be told to do (ignore a skip, take long to start); the tests marked slow
train the tiny model for real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from conftest import PYTHON, REPO, chat_lines, wait_for, write_config, write_jsonl
from test_daemon import (_alive, _try_status, acked, bare_home, contract_env, drop, folder_jobs, reap,  # noqa: F401 - fixtures and helpers shared with test_daemon
                         run_once, start, status)
from trainingd import exit_codes
from trainingd.contracts.requests import write_request
from trainingd.paths import Home
from trainingd.jobqueue import JobQueue

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def daemon_log(root: Path) -> str:
    # logs/daemon.log is a link to today's daemon_YYYYMMDD.log: read each file once
    return "".join(p.read_text() for p in sorted((root / "logs").glob("daemon*.log")) if not p.is_symlink())


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    """SIGTERM a daemon and wait for its clean exit (a test that failed early still gets it reaped)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    return reap(proc)


def adapter_state(root: Path) -> dict:
    return json.loads((root / "current_model" / "adapter_state.json").read_text())


# ------------------------------------------------------------------------------------- 1. adapter generation
@pytest.mark.slow
def test_a_job_resumed_after_another_published_restarts_on_the_new_adapter(home, tmp_path):
    """A stops with a checkpoint, high-priority B trains and publishes, A resumes: B stays in the adapter."""
    from safetensors.torch import load_file

    reference = tmp_path / "reference"
    shutil.copytree(home, reference)
    a_file = write_jsonl(tmp_path / "a.jsonl", chat_lines(200, seed=11))
    b_file = write_jsonl(tmp_path / "b.jsonl", chat_lines(8, seed=12))

    # The uninterrupted history: B, then A on top of B.
    q_ref = JobQueue(Home.at(reference))
    q_ref.ensure_dirs()
    q_ref.add(a_file)
    q_ref.add(b_file, priority="high")
    res = run_once(reference)
    assert res.returncode == 0, res.stderr

    q = JobQueue(Home.at(home))
    q.ensure_dirs()
    a = q.add(a_file)
    proc = start(home)
    try:
        wait_for(lambda: list((home / "current_model" / "checkpoints").glob("*/step-*/COMPLETE")),
                 "a checkpoint of A", limit_s=180)
        write_request(Home.at(home), "stop")
        proc.wait(timeout=120)
    finally:
        reap(proc)
    assert folder_jobs(home, "pending") == [a.id], "A waits with its checkpoint"
    assert not (home / "current_model" / "adapter_state.json").exists()
    b = q.add(b_file, priority="high")
    res = run_once(home)
    assert res.returncode == 0, res.stderr
    assert sorted(folder_jobs(home, "done")) == sorted([a.id, b.id])
    state = adapter_state(home)
    assert [t["job_id"] for t in state["trained"]] == [b.id, a.id]
    assert state["generation"] == 2
    log = (home / "logs" / "training_output.log").read_text()
    assert "retraining it on the current adapter" in log
    assert "made on another adapter" in (q.get(a.id).meta["result"] or {}).get("notice", "")
    got = load_file(home / "current_model" / "adapter_model.safetensors")
    want = load_file(reference / "current_model" / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    worst = max(float((got[k] - want[k]).abs().max()) for k in got)
    assert worst < 1e-5, f"the final adapter is not B then A (max difference {worst})"


# ------------------------------------------------------------------------------------- 2. locked keys
OLD_LOCKED = ["base_model", "use_qlora", "lora", "max_length", "train_on"]


def test_old_locked_keys_parse_and_only_adapter_identity_is_locked():
    from trainingd.config import parse_config

    cfg = parse_config({"locked_keys": OLD_LOCKED, "use_qlora": True, "max_length": 64})
    assert set(cfg.locked_values()) == {"base_model", "lora.r", "lora.alpha", "lora.target_modules"}


def test_a_changed_locked_key_holds_the_daemon_without_failing_jobs_until_reload(tmp_path, contract_env):
    root = bare_home(tmp_path)
    cm = root / "current_model"
    cm.mkdir()
    # The live adapter was made with r=8 (recorded the old way, with settings that are no longer locked).
    lora = {"r": 8, "alpha": 32, "dropout": 0.0,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    (cm / "adapter_state.json").write_text(json.dumps({
        "base_model": "x", "locked": {"base_model": "embedded:tiny-qwen3", "use_qlora": True, "lora": lora,
                                      "max_length": 4096, "train_on": "all"}, "trained": []}))
    drop(root, "one.jsonl", {"exit": 0, "name": "ok"})
    drop(root, "two.jsonl", {"exit": 0, "name": "ok"})
    proc = start(root, contract_env)
    try:
        st = wait_for(lambda: (s := _try_status(root)) and s.get("condition") and s, "the held status")
        cond = st["condition"]
        assert st["status"] == "paused"
        assert cond["changes"] == [{"key": "lora.r", "adapter": 8, "config": 16}]
        assert "lora.r" in st["status_detail"] and "8" in st["status_detail"] and "16" in st["status_detail"]
        assert any("move current_model" in w for w in cond["ways_out"])
        time.sleep(1.5)
        assert status(root)["queue"]["pending"]["normal"] == 2
        assert folder_jobs(root, "failed") == [] and folder_jobs(root, "processing") == []
        write_config(root, lora={"r": 8})
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(folder_jobs(root, "done")) == 2, "both jobs to train after the reload")
        assert status(root)["condition"] is None
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    assert "trainer started" in daemon_log(root)


def test_an_adapter_mismatch_from_the_trainer_requeues_and_holds(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "one.jsonl", {"exit": exit_codes.ADAPTER_MISMATCH, "name": "adapter_mismatch",
                             "reason": "the adapter in current_model was made with another base model"})
    drop(root, "two.jsonl", {"exit": 0, "name": "ok"})
    res = run_once(root, contract_env)
    assert res.returncode == exit_codes.CONFIG_ERROR, res.stderr
    assert folder_jobs(root, "failed") == [] and folder_jobs(root, "done") == []
    first = JobQueue(Home.at(root)).jobs(["pending"])[0]
    assert first.meta["original_name"] == "one.jsonl" and first.meta["attempts"] == 0
    assert "another base model" in status(root)["condition"]["message"]
    assert res.stderr.count("trainer started") == 1


@pytest.mark.slow
def test_a_lora_adapter_trained_without_qlora_continues_on_a_4bit_base(tiny_model, tmp_path):
    small = ["--max-length", "96", "--batch-size", "4", "--gradient-accumulation", "1", "--lora-r", "4",
             "--lora-alpha", "8"]
    data = write_jsonl(tmp_path / "sample.jsonl", chat_lines(8))

    def train(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, str(REPO / "train.py"), "--dataset", str(data), "--epochs", "1", *args],
                              cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first = train("--model", str(tiny_model), "--output-dir", str(tmp_path / "current_model"), *small)
    assert first.returncode == exit_codes.OK, first.stdout
    r = train("--model", str(tmp_path / "current_model"), "--output-dir", str(tmp_path / "adapters" / "sample_run"),
              "--use-qlora", "--job-id", "again")
    assert r.returncode == exit_codes.OK, r.stdout
    state = json.loads((tmp_path / "adapters" / "sample_run" / "adapter_state.json").read_text())
    assert [t["job_id"] for t in state["trained"]] == ["standalone", "again"]


# ------------------------------------------------------------------------------------- 3. I/O error after a claim
def test_an_io_error_right_after_a_claim_puts_the_job_back_at_the_head(tmp_path, contract_env):
    root = bare_home(tmp_path)
    proc = start(root, contract_env)
    try:
        wait_for(lambda: _try_status(root), "the daemon to start")
        # control/trainer_command.json cannot be written while a folder holds its name.
        (root / "control" / "trainer_command.json").mkdir()
        drop(root, "1-first.jsonl", {"exit": 0, "name": "ok"})
        drop(root, "2-second.jsonl", {"exit": 0, "name": "ok"})
        wait_for(lambda: "queue: Is a directory (control/trainer_command.json)" in daemon_log(root),
                 "the failed start, naming the folder in the way", limit_s=60)
        assert proc.poll() is None
        wait_for(lambda: folder_jobs(root, "processing") == [], "the job back in pending", limit_s=10)
        pending = JobQueue(Home.at(root)).jobs(["pending"])
        assert [j.meta["original_name"] for j in pending] == ["1-first.jsonl", "2-second.jsonl"]
        (root / "control" / "trainer_command.json").rmdir()
        wait_for(lambda: len(folder_jobs(root, "done")) == 2, "both jobs to train once the fault is gone")
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
    history = [json.loads(line) for line in (root / "status" / "history.jsonl").read_text().splitlines()]
    assert [h["file"] for h in history] == ["1-first.jsonl", "2-second.jsonl"]


# ------------------------------------------------------------------------------------- 4. start racing an add
SLOW_ADD = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import trainingd.jobqueue as queue
    from trainingd.paths import Home
    real, go = queue.file_sha256, Path(sys.argv[3])

    def slow_hash(path):  # hashing a big file takes a while: wait for the test's go
        print("hashing", flush=True)
        while not go.exists():
            time.sleep(0.02)
        return real(path)

    queue.file_sha256 = slow_hash
    job = queue.JobQueue(Home.at(sys.argv[1])).add(Path(sys.argv[2]), priority="high")
    print("added", job.id, job.state, job.priority, flush=True)
''')


def test_a_daemon_start_waits_for_an_add_in_progress(tmp_path, contract_env):
    root = bare_home(tmp_path)
    JobQueue(Home.at(root)).ensure_dirs()
    src = write_jsonl(tmp_path / "urgent.jsonl", [{"stand_in": {"exit": 0, "name": "ok"}}])
    go = tmp_path / "go"
    adder = subprocess.Popen([PYTHON, "-c", SLOW_ADD, str(root), str(src), str(go)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    daemon = None
    try:
        assert adder.stdout.readline().strip() == "hashing"
        daemon = start(root, contract_env, "--once")
        time.sleep(2.0)  # the daemon is starting while the add is half done
        go.touch()
        out, err = adder.communicate(timeout=60)
        assert adder.returncode == 0, err
        assert out.split()[-2:] == ["pending", "high"]
        daemon.wait(timeout=120)
    finally:
        go.touch()
        reap(adder)
        if daemon is not None:
            d_out, d_err = reap(daemon)
    assert daemon.returncode == 0, d_err
    jobs = JobQueue(Home.at(root)).jobs()
    assert [(j.state, j.priority, j.meta["original_name"]) for j in jobs] == [("done", "high", "urgent.jsonl")]
    assert not list((root / "queue" / ".incoming").iterdir())


# ------------------------------------------------------------------------------------- 5. stale control requests
def test_requests_written_before_the_daemon_started_are_answered_stale(tmp_path, contract_env):
    root = bare_home(tmp_path)
    Home.at(root).control_requests.mkdir(parents=True)
    pause = write_request(Home.at(root), "pause")
    stop_req = write_request(Home.at(root), "stop")
    time.sleep(0.05)
    drop(root, "work.jsonl", {"steps": 10**9})
    proc = start(root, contract_env)
    try:
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training")
        for req in (pause, stop_req):
            assert acked(root, req.id)["result"].startswith("stale"), req
        assert proc.poll() is None and status(root)["control"]["paused"] is False
        fresh = write_request(Home.at(root), "pause")
        assert wait_for(lambda: acked(root, fresh.id), "a fresh pause")["result"] == "paused"
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err


# ------------------------------------------------------------------------------------- 6. a skip stays a skip
@pytest.mark.parametrize("ending", ["stopped", "crash"])
def test_a_skip_is_not_undone_when_the_trainer_ends_before_honouring_it(tmp_path, contract_env, ending):
    root = bare_home(tmp_path)
    spec = {"ignore_skip": True} if ending == "stopped" else {"on_skip_exit": exit_codes.CRASH}
    drop(root, "1-skipped.jsonl", {"steps": 10**9, **spec})
    drop(root, "2-next.jsonl", {"exit": 0, "name": "ok"})
    proc = start(root, contract_env, "--max-jobs", "2" if ending == "crash" else "1")
    try:
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training")
        skip = write_request(Home.at(root), "skip")
        if ending == "stopped":
            wait_for(lambda: (s := _try_status(root)) and s["status_detail"] == "skipping the current job",
                     "the skip to be asked of the trainer")
            (root / ".stop").touch()
        proc.wait(timeout=60)
    finally:
        out, err = reap(proc)
    assert proc.returncode == 0, err
    by_name = {j.meta["original_name"]: j for j in JobQueue(Home.at(root)).jobs()}
    skipped = by_name["1-skipped.jsonl"]
    assert skipped.state == "failed", err
    assert (skipped.dir / "reason.txt").read_text().startswith("skipped by user request")
    assert acked(root, skip.id)["result"].startswith("skipped")
    assert err.count(f"job {skipped.id}: trainer started") == 1


# ------------------------------------------------------------------------------------- 7. progress and orphans
def test_the_status_never_shows_the_previous_attempt_of_a_resumed_job(tmp_path, contract_env):
    root = bare_home(tmp_path)
    q = JobQueue(Home.at(root))
    q.ensure_dirs()
    job = q.add(write_jsonl(tmp_path / "again.jsonl", [{"stand_in": {"start_delay": 30}}]))
    q.claim_next()  # the last daemon died while training it
    progress = Home.at(root).trainer_progress
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text(json.dumps({"job_id": job.id, "pid": 2**22 + 7, "status": "training", "step": 500,
                                    "total_steps": 1000, "loss": 0.5}))
    proc = start(root, contract_env)
    try:
        st = wait_for(lambda: (s := _try_status(root)) and s["job"] and s, "the resumed job in the status")
        assert st["job"]["id"] == job.id
        assert st["current_step"] is None and st["loss"] is None and st["status"] == "loading", st
    finally:
        stop(proc)


def test_a_trainer_that_has_not_reported_yet_is_ended_by_the_next_daemon(tmp_path, contract_env):
    root = bare_home(tmp_path)
    drop(root, "slow start.jsonl", {"start_delay": 600})
    first = start(root, contract_env)
    orphan = None
    try:
        wait_for(lambda: (s := _try_status(root)) and s["job"], "the trainer to be started")
        orphan = wait_for(lambda: psutil.Process(first.pid).children(), "the trainer process")[0].pid
        assert not Home.at(root).trainer_progress.exists()
        first.kill()
        first.communicate(timeout=30)
        assert _alive(orphan)
        second = start(root, contract_env)
        try:
            wait_for(lambda: (text := daemon_log(root)).count("daemon starting") == 2
                     and "trainer started" in text.split("daemon starting")[-1], "the second daemon's trainer")
            assert not _alive(orphan), "two trainers on one job"
        finally:
            out, err = stop(second)
        assert "still running" in err
    finally:
        reap(first)
        if orphan is not None and _alive(orphan):
            os.killpg(orphan, signal.SIGKILL)


# ------------------------------------------------------------------------------------- 8. checkpoint retirement
KILL_IN_RMTREE = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path
    from trainingd.train import checkpoint as ckpt
    real = os.unlink

    def unlink(path, *args, dir_fd=None, **kw):
        real(path, *args, dir_fd=dir_fd, **kw)
        # killed while deleting the payload of a folder that still holds its COMPLETE marker
        try:
            os.stat(ckpt.COMPLETE, dir_fd=dir_fd) if dir_fd is not None else os.stat(Path(path).parent / ckpt.COMPLETE)
        except FileNotFoundError:
            return
        os.kill(os.getpid(), signal.SIGKILL)

    os.unlink = unlink
    if sys.argv[1] == "prune":
        ckpt.prune(Path(sys.argv[2]), keep=1)
    else:
        ckpt.remove_checkpoints(Path(sys.argv[2]))
''')
PAYLOAD = ["adapter_config.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt",
           "state.json", "manifest.json"] + [f"shard-{i:02d}.bin" for i in range(40)]


@pytest.mark.parametrize("how", ["prune", "remove"])
def test_a_kill_while_retiring_a_checkpoint_never_leaves_a_complete_folder_without_its_files(tmp_path, how):
    from trainingd.train import checkpoint as ckpt

    job_dir = tmp_path / "checkpoints" / "000001-job"
    for step in (2, 4):
        folder = job_dir / ckpt.step_dir_name(step)
        folder.mkdir(parents=True)
        (folder / ckpt.COMPLETE).write_text(f"{step}\n")  # first, so a directory listing need not start with it
        for name in PAYLOAD:
            (folder / name).write_text("x")
    r = subprocess.run([PYTHON, "-c", KILL_IN_RMTREE, how, str(job_dir)], env=ENV, capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    for folder in ckpt.list_complete(job_dir):
        missing = [n for n in PAYLOAD if not (folder / n).exists()]
        assert not missing, f"{folder.name} is marked COMPLETE but lacks {missing[:3]}"
    ckpt.prune(job_dir, keep=1) if how == "prune" else ckpt.remove_checkpoints(job_dir)
    leftovers = [p.name for p in (tmp_path / "checkpoints").rglob("*") if p.is_dir() and "retired" in p.name]
    assert leftovers == [], "a retired folder is removed by the next retirement"


# ------------------------------------------------------------------------------------- 9. no exception ends the daemon
@pytest.mark.parametrize("bad", ["{not json", '{"file": 5}'])
def test_a_hand_edited_job_json_fails_that_job_and_the_daemon_carries_on(tmp_path, contract_env, bad):
    root = bare_home(tmp_path)
    q = JobQueue(Home.at(root))
    q.ensure_dirs()
    broken = q.add(write_jsonl(tmp_path / "broken.jsonl", [{"stand_in": {"exit": 0, "name": "ok"}}]))
    good = q.add(write_jsonl(tmp_path / "good.jsonl", [{"stand_in": {"exit": 0, "name": "ok"}}]))
    (broken.dir / "job.json").write_text(bad)
    listed = subprocess.run([PYTHON, str(REPO / "training_queue.py"), "list", "--home", str(root)], env=ENV,
                            capture_output=True, text=True)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if broken.id in ln)
    assert "job.json" in line, listed.stdout
    res = run_once(root, contract_env)
    assert res.returncode == 0, res.stderr
    assert folder_jobs(root, "done") == [good.id] and folder_jobs(root, "failed") == [broken.id]
    failed = q.get(broken.id)
    assert "job.json" in (failed.dir / "reason.txt").read_text()
    assert (failed.dir / "job.json.broken").read_text() == bad, "the hand-edited file is kept"
    assert failed.data_file.name == "broken.jsonl"
    assert "job.json" in status(root)["last_error"]["message"]


# ------------------------------------------------------------------------------------- supervision
UNIT = REPO / "deploy" / "trainingd.service"


def test_the_systemd_unit_restarts_on_failure_and_outwaits_the_stop_ladder():
    import configparser

    from trainingd.config import Config
    from trainingd.daemon.trainer_process import KILL_AFTER_TERM_S

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read_string(UNIT.read_text())
    svc = unit["Service"]
    assert svc["Restart"] == "on-failure" and svc["KillMode"] == "mixed" and svc["Type"] == "exec"
    assert int(svc["TimeoutStopSec"]) > Config().stop_grace_s + KILL_AFTER_TERM_S
    assert "training_daemon.py" in svc["ExecStart"] and "--home" in svc["ExecStart"]
    assert "kill -HUP $MAINPID" in svc["ExecReload"]
    assert str(exit_codes.CONFIG_ERROR) in svc["RestartPreventExitStatus"]
    assert str(exit_codes.ALREADY_RUNNING) in svc["RestartPreventExitStatus"]
    guide = (REPO / "docs" / "operations.md").read_text()
    assert "deploy/trainingd.service" in guide and "systemctl enable --now trainingd" in guide


def test_systemd_analyze_verifies_the_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "systemd"], capture_output=True)
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (apt-get install systemd)"
    # Point the unit at this checkout so the paths it names exist.
    text = UNIT.read_text().replace("/opt/trainingd", str(REPO)).replace("/srv/trainingd", str(tmp_path))
    unit = tmp_path / "trainingd.service"
    unit.write_text(text)
    (REPO / ".venv" / "bin" / "python").exists() or pytest.fail("the unit runs .venv/bin/python")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines()
                if "trainingd.service" in ln and "System has not been booted" not in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


def test_sighup_reloads_the_config_and_refuses_an_invalid_one(tmp_path, contract_env):
    root = bare_home(tmp_path)
    proc = start(root, contract_env)
    try:
        wait_for(lambda: _try_status(root), "the daemon to start")
        (root / "config.json").write_text('{"max_attempts": "three"}')
        proc.send_signal(signal.SIGHUP)
        st = wait_for(lambda: (s := _try_status(root)) and s["daemon"].get("config_reload_error") and s,
                      "the refused reload in the status")
        assert "max_attempts" in st["daemon"]["config_reload_error"]
        assert "max_attempts" in st["last_error"]["message"] and proc.poll() is None
        (root / "config.json").write_text(json.dumps({"max_attempts": 5, "stop_grace_s": 30.0}))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: (s := _try_status(root)) and s["daemon"].get("config_reload_error") is None,
                 "the accepted reload")
        assert "max_attempts: 2 -> 5" in daemon_log(root)
        # The trainer gets the configuration the daemon holds.
        drop(root, "x.jsonl", {"steps": 10**9})
        wait_for(lambda: (s := _try_status(root)) and s["status"] == "training", "training")
        cmd = json.loads((root / "control" / "trainer_command.json").read_text())
        assert cmd["config"]["max_attempts"] == 5
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err
