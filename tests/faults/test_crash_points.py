"""Crash at every fault point, restart, let the daemon finish: every invariant of the home holds.

    ./run_tests.sh tests/faults -q                 (-m "faults and not slow": only the stand-in trainer)

The daemon's, the queue's and the command lines' points run with the stand-in trainer (fast); the trainer's
points run a real training of the tiny model, killed together with its daemon (``:all``, as in a power cut) at
each point in turn, and the adapter it ends with must equal an uninterrupted run's: tensor for tensor within
``ADAPTER_TOLERANCE`` (on this CPU with fp32 it is bitwise equal).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fault_helpers import STAND_IN_DEFAULTS, REPO, daemon_log, drop, job_metas, run_daemon, stand_in_home, write_config
from trainingd import faults
from trainingd.checks.invariants import adapter_difference, check_home
from trainingd.paths import Home

pytestmark = pytest.mark.faults

ADAPTER_TOLERANCE = 1e-6
FILES = {"a-ok.jsonl": {"steps": 3}, "b-crash.jsonl": {"exit": 1, "name": "crash", "print": "boom"},
         "c-bad.jsonl": {"exit": 4, "name": "data_error", "reason": "line 1: no messages"},
         "d-ok.jsonl": {"steps": 2}}

# point -> the hit to crash at (the n-th time this daemon process passes it)
DAEMON_POINTS = {"intake": 2, "intake_publish": 3, "job_meta": 5, "claim": 1, "claimed": 2, "trainer_spawn": 1,
                 "trainer_command": 2, "status": 4, "complete": 1, "completed": 1, "requeue": 1, "requeued": 1,
                 "fail": 1, "failed": 2}


def test_every_point_is_listed_once_and_described():
    assert len(faults.POINTS) == len(set(faults.POINTS)) >= 25
    for name in ("step", "checkpoint", "publish", "snapshot", "consolidate", "claim", "complete", "fail", "retry",
                 "remove", "intake", "control", "status", "checkpoint_save", "checkpoint_retire"):
        assert name in faults.POINTS
    assert set(faults.TRAINER_POINTS) <= set(faults.POINTS)


def test_every_point_is_called_somewhere_in_the_code():
    """A listed point nobody calls would make a crash test pass without crashing."""
    called = set()
    for path in (REPO / "trainingd").rglob("*.py"):
        if path.name == "faults.py":
            continue
        for line in path.read_text().splitlines():
            if re.search(r'fault_point|crash_point|point=|_POINTS|\): \("|"fail", "failed"', line):
                called |= set(re.findall(r'"([a-z_]+)"', line))
    called |= {name + "d" for name in called}  # a transition's point after its rename: remove -> removed
    missing = set(faults.POINTS) - called - {"snapshot", "consolidate"}  # built in parallel; names reserved
    assert not missing, f"fault points listed but never called: {sorted(missing)}"


def test_a_bad_fault_spec_is_refused_not_ignored():
    env = {**os.environ, "TRAININGD_CRASH_AT": "stpe:3"}
    res = subprocess.run([sys.executable, "-c", "import trainingd.atomic_ops"], env=env, cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode != 0 and "stpe" in res.stderr


@pytest.mark.parametrize("point", sorted(DAEMON_POINTS))
def test_a_daemon_killed_at_each_point_loses_nothing_after_a_restart(tmp_path, point):
    root, env = stand_in_home(tmp_path)
    for name, spec in FILES.items():
        drop(root, name, spec)
    crashed = run_daemon(root, env, faults={"TRAININGD_CRASH_AT": f"{point}:{DAEMON_POINTS[point]}"})
    assert crashed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{crashed.stderr[-3000:]}"
    res = run_daemon(root, env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert check_home(Home.at(root), expect_files=FILES) == []
    done = {m["original_name"] for m in job_metas(root, "done")}
    assert {"a-ok.jsonl", "d-ok.jsonl"} <= done  # a good file is never failed by a crash
    state = json.loads((root / "current_model" / "adapter_state.json").read_text())
    assert sorted(t["file"] for t in state["trained"]) == ["a-ok.jsonl", "d-ok.jsonl"]


@pytest.mark.parametrize("point", ["retry", "retried", "remove", "removed"])
def test_a_command_line_killed_at_its_point_loses_nothing(tmp_path, point):
    root, env = stand_in_home(tmp_path)
    cli = [sys.executable, str(REPO / "training_queue.py"), "--home", str(root)]
    data = tmp_path / "x.jsonl"
    data.write_text(json.dumps({"stand_in": {**STAND_IN_DEFAULTS, "steps": 1}}) + "\n")
    bad = tmp_path / "y.jsonl"
    bad.write_text(json.dumps({"stand_in": {**STAND_IN_DEFAULTS, "exit": 4, "once": str(tmp_path / "y.once")}})
                   + "\n")
    for f in (data, bad):
        subprocess.run([*cli, "add", str(f)], env=env, check=True, capture_output=True, cwd=REPO)
    ids = sorted(p.name for p in (root / "queue" / "pending" / "normal").iterdir())
    if point.startswith("retr"):
        assert run_daemon(root, env).returncode == 0  # y fails once (data_error), x is done
        target = [m["id"] for m in job_metas(root, "failed")][0]
        cmd = [*cli, "retry", target]
    else:
        target = ids[0]
        cmd = [*cli, "remove", target]
    res = subprocess.run(cmd, env={**env, "TRAININGD_CRASH_AT": f"{point}:1"}, capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert run_daemon(root, env).returncode == 0
    assert check_home(Home.at(root), expect_files=["x.jsonl", "y.jsonl"]) == []


def test_a_job_published_just_before_a_kill_is_completed_once_and_its_checkpoints_removed(tmp_path):
    root, env = stand_in_home(tmp_path)
    drop(root, "a.jsonl", {"kill_after_publish": True, "once": str(tmp_path / "a-once")})
    assert run_daemon(root, env).returncode == -signal.SIGKILL
    assert (root / "current_model" / "checkpoints" / "000001-a").exists()
    res = run_daemon(root, env)
    assert res.returncode == 0 and "was published before a crash" in daemon_log(root)
    assert check_home(Home.at(root), expect_files=["a.jsonl"]) == []  # done once, no checkpoints left


def test_a_start_up_sweep_removes_what_killed_writes_left_but_not_a_command_line_writing_now(tmp_path):
    from trainingd.instance import init_home
    from trainingd.checks.invariants import sweep_temp_files, temp_files

    home = Home.at(tmp_path / "home")
    init_home(home)
    job_dir = home.pending("normal") / "000001-a"
    job_dir.mkdir()
    ckpt_dir = home.job_checkpoints("000001-a")
    ckpt_dir.mkdir(parents=True)
    left = [home.status_dir / ".training_status.json.x1.tmp", job_dir / ".job.json.x2.tmp",
            home.queue / "..next_job_number.x3.tmp", home.root / "..daemon.pid.x4.tmp",
            home.root / ".config.json.x5.tmp", home.current_model / ".adapter_model.safetensors.x6.tmp",
            home.control / ".trainer_command.json.x7.tmp", home.root / "..trainer.json.x9.tmp"]
    for p in left:
        p.write_text("half")
    for name in (".tmp-step-000004-x", ".retired-step-000002-1"):
        (ckpt_dir / name).mkdir()
    young = home.control_requests / ".0001-pause-abc.json.x8.tmp"  # a controller writing at this moment
    young.write_text("{")
    removed = sweep_temp_files(home)
    assert sorted(removed) == sorted([*left, ckpt_dir / ".tmp-step-000004-x", ckpt_dir / ".retired-step-000002-1"])
    assert temp_files(home) == [young]
    old = time.time() - 3600
    os.utime(young, (old, old))
    assert sweep_temp_files(home) == [young]


def test_a_controller_killed_while_writing_a_request_leaves_nothing_after_a_run(tmp_path):
    root, env = stand_in_home(tmp_path)
    code = ("from trainingd.contracts.requests import write_request; from trainingd.paths import Home; "
            f"write_request(Home.at({str(root)!r}), 'pause')")
    res = subprocess.run([sys.executable, "-c", code], env={**env, "TRAININGD_CRASH_AT": "control:1"},
                         capture_output=True, text=True, cwd=REPO)
    assert res.returncode == -signal.SIGKILL, res.stderr
    leftovers = [p for p in (root / "control").rglob("*.tmp")]
    assert leftovers, "the crash should have left the request's temp file"
    old = time.time() - 3600  # "older than a run": a command line writing now is never robbed
    for p in leftovers:
        os.utime(p, (old, old))
    drop(root, "a.jsonl", {"steps": 1})
    assert run_daemon(root, env).returncode == 0
    assert check_home(Home.at(root), expect_files=["a.jsonl"]) == []


# ------------------------------------------------------------------------------------------ the trainer's points
# Killed together with the daemon at each trainer point in turn, on one job; each restart resumes where the
# last complete checkpoint left it. save_steps 2, keep 2: step 3 dies after a checkpoint at 2; the retire
# happens when the third save prunes the first.
TRAINER_CHAIN = ["step:3:all", "checkpoint_save:1:all", "checkpoint:2:all", "checkpoint_retire:1:all",
                 "publish_file:2:all", "publish:1:all"]


def _real_home(tmp_path: Path, name: str, tiny_model: Path) -> Path:
    root = tmp_path / name
    root.mkdir()
    write_config(root, base_model=str(tiny_model), max_length=96, batch_size=2, gradient_accumulation=1,
                 save_steps=2, keep_checkpoints=2, learning_rate=1e-3, epochs=1, max_attempts=20,
                 stable_seconds=0.2, stop_grace_s=20.0)
    return root


def _real_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAININGD_")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_killed_at_every_trainer_point_in_turn_ends_with_the_uninterrupted_adapter(tmp_path, tiny_model):
    from conftest import chat_lines

    lines = chat_lines(20, seed=3)  # 10 optimizer steps
    env = _real_env()
    reference = _real_home(tmp_path, "reference", tiny_model)
    crashed = _real_home(tmp_path, "crashed", tiny_model)
    for root in (reference, crashed):
        drop(root, "chat.jsonl", lines=lines)
    ref = run_daemon(reference, env)
    assert ref.returncode == 0, ref.stderr[-3000:]

    for spec in TRAINER_CHAIN:
        res = run_daemon(crashed, env, faults={"TRAININGD_CRASH_AT": spec})
        assert res.returncode == -signal.SIGKILL, f"{spec} was never reached:\n{res.stderr[-3000:]}"
        assert check_home(Home.at(crashed), idle=False, require_status=False) == []
    res = run_daemon(crashed, env)
    assert res.returncode == 0, res.stderr[-3000:]

    for root in (reference, crashed):
        assert check_home(Home.at(root), expect_files=["chat.jsonl"]) == []
    diff = adapter_difference(reference / "current_model", crashed / "current_model")
    assert diff <= ADAPTER_TOLERANCE, f"the resumed adapter differs by {diff}"
    training_log = (crashed / "logs" / "training_output.log").read_text()
    assert training_log.count("resumed from") >= 4  # each restart after the first checkpoint resumed from one
    state = json.loads((crashed / "current_model" / "adapter_state.json").read_text())
    assert [t["file"] for t in state["trained"]] == ["chat.jsonl"]
