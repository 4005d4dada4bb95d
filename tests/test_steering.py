"""Steering a real daemon end to end: pause, resume, skip, stop and ``.stop``, with ``--wait``.

    .venv/bin/python -m pytest tests/test_steering.py -x -q

Each test starts ``training_daemon.py --home H`` as a subprocess on the tiny model of the ``home`` fixture;
the daemon spawns the real trainer. The training file is thousands of one-example steps, so the trainer is
still running when the test acts; the tests poll the status file and the queue folders, never sleep-and-hope.
The only time-based check is the one the feature is about: a paused trainer's step stays put for 2 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import chat_lines, write_config, write_jsonl
from trainingd.atomic_ops import read_json, read_jsonl
from trainingd.paths import Home
from trainingd.jobqueue import JobQueue

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
BIG_LINES = 3000  # ~20 s of training on the tiny model here: far longer than a control round trip
PATIENCE_S = 300  # only a guard against hanging forever; no assertion is about speed

pytestmark = pytest.mark.slow


class Daemon:
    """A ``training_daemon.py`` subprocess with its output in a log file (shown when a wait fails)."""

    def __init__(self, home: Path, *args: str):
        self.home = home
        self.log = home.parent / f"daemon-{time.time_ns()}.out"
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([PY, str(REPO / "training_daemon.py"), "--home", str(home), *args],
                                         stdout=out, stderr=subprocess.STDOUT, env=env, cwd=home,
                                         start_new_session=True)

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        training_log = self.home / "logs" / "training_output.log"
        trainer = training_log.read_text(errors="replace")[-3000:] if training_log.exists() else ""
        return f"--- daemon output ---\n{text[-4000:]}\n--- trainer output ---\n{trainer}"

    def wait(self) -> int:
        wait_for(lambda: self.proc.poll() is not None, "the daemon to exit", self)
        return self.proc.returncode

    def close(self) -> None:
        """Teardown: a daemon still running is asked to stop, then killed."""
        if self.proc.poll() is None:
            Home(self.home).emergency_stop.touch()
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def wait_for(predicate: Callable[[], Any], what: str, daemon: Daemon | None = None) -> Any:
    deadline = time.monotonic() + PATIENCE_S
    while True:
        value = predicate()
        if value:
            return value
        if daemon is not None and daemon.proc.poll() is not None and what != "the daemon to exit":
            pytest.fail(f"daemon exited ({daemon.proc.returncode}) while waiting for {what}\n{daemon.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}\n{daemon.tail() if daemon else ''}")
        time.sleep(0.1)


def status(home: Path) -> dict:
    try:
        return read_json(Home(home).status) or {}
    except ValueError:
        return {}


def job_step(home: Path, job_id: str) -> int | None:
    job = status(home).get("job") or {}
    return job.get("step") if job.get("id") == job_id else None


def training_at(home: Path, job_id: str, min_step: int = 1) -> Callable[[], bool]:
    def check() -> bool:
        st = status(home)
        return st.get("status") == "training" and (job_step(home, job_id) or 0) >= min_step
    return check


def controller(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / "training_controller.py"), *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=PATIENCE_S + 60)


def adapter_bytes(home: Path) -> dict[str, bytes]:
    """The live adapter's files (checkpoints aside): what a skip must leave untouched."""
    folder = Home(home).current_model
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}


def complete_checkpoints(home: Path, job_id: str) -> list[Path]:
    return sorted(Home(home).job_checkpoints(job_id).glob("step-*/COMPLETE"))


def trained_steps(home: Path, job_id: str) -> list[int]:
    """The optimizer steps the trainer logged for a job, in order, across all its runs."""
    return [int(r["step"]) for r in read_jsonl(Home(home).metrics)
            if r.get("job_id") == job_id and r.get("loss") is not None]


def trained_job_ids(home: Path) -> list[str]:
    state = read_json(Home(home).current_model / "adapter_state.json") or {}
    return [t["job_id"] for t in state.get("trained", [])]


@pytest.fixture
def steer_home(home: Path) -> Path:
    # One example per optimizer step, rare periodic checkpoints: many quick steps, each a control point.
    write_config(home, batch_size=1, gradient_accumulation=1, save_steps=500, rescan_interval_s=1.0)
    return home


@pytest.fixture
def daemons():
    started: list[Daemon] = []

    def start(home: Path, *args: str) -> Daemon:
        d = Daemon(home, *args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


def test_pause_resume_and_skip_steer_the_running_trainer(steer_home, daemons, tmp_path):
    home = steer_home
    q = JobQueue(Home(home))
    q.ensure_dirs()
    big = q.add(write_jsonl(tmp_path / "big.jsonl", chat_lines(BIG_LINES)))
    before = adapter_bytes(home)
    d = daemons(home)
    wait_for(training_at(home, big.id), f"{big.id} to start training", d)

    # pause: acknowledged once the trainer reports paused; the step then stays put
    r = controller(home, "pause", "--wait", "--timeout", str(PATIENCE_S))
    assert r.returncode == 0, r.stderr + d.tail()
    st = status(home)
    assert st["status"] == "paused" and st["control"]["paused"] is True
    paused_step = job_step(home, big.id)
    assert paused_step is not None and paused_step < BIG_LINES
    held_since = time.monotonic()
    while time.monotonic() - held_since < 2.0:
        assert job_step(home, big.id) == paused_step
        assert status(home)["status"] == "paused"
        time.sleep(0.2)
    assert trained_steps(home, big.id)[-1] == paused_step

    # a second pause is harmless: acknowledged, still paused at the same step
    r = controller(home, "pause", "--wait", "--timeout", str(PATIENCE_S))
    assert r.returncode == 0, r.stderr
    assert status(home)["status"] == "paused" and job_step(home, big.id) == paused_step

    # resume: the step advances again, continuing from where it paused (no step lost or repeated)
    r = controller(home, "resume", "--wait", "--timeout", str(PATIENCE_S))
    assert r.returncode == 0, r.stderr
    wait_for(lambda: (job_step(home, big.id) or 0) > paused_step, "the step to advance after resume", d)
    assert status(home)["control"]["paused"] is False
    steps = trained_steps(home, big.id)
    assert steps == list(range(1, len(steps) + 1))

    # skip: the job lands in failed/ as skipped, the adapter is untouched, its checkpoints are gone
    r = controller(home, "skip", "--wait", "--timeout", str(PATIENCE_S))
    assert r.returncode == 0, r.stderr + d.tail()
    job = q.get(big.id)
    assert job.state == "failed"
    assert "skipped" in (job.dir / "reason.txt").read_text()
    assert adapter_bytes(home) == before
    assert complete_checkpoints(home, big.id) == []

    # the daemon goes on with the next file
    small = tmp_path / "next.jsonl"
    write_jsonl(small, chat_lines(8, seed=1))
    r = subprocess.run([PY, str(REPO / "training_queue.py"), "add", str(small), "--home", str(home), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    nxt = json.loads(r.stdout)["job"]["id"]
    wait_for(lambda: q.get(nxt).state == "done", f"{nxt} to be trained", d)
    assert trained_job_ids(home) == [nxt]

    r = controller(home, "stop", "--wait", "--timeout", str(PATIENCE_S))
    assert r.returncode == 0, r.stderr
    assert d.wait() == 0, d.tail()


def test_stop_and_dot_stop_requeue_with_a_checkpoint_and_a_restart_finishes(steer_home, daemons, tmp_path):
    home = steer_home
    q = JobQueue(Home(home))
    q.ensure_dirs()
    job = q.add(write_jsonl(tmp_path / "big.jsonl", chat_lines(BIG_LINES)))

    # stop request: checkpoint, job back at the head of its queue, daemon exits 0
    d = daemons(home)
    wait_for(training_at(home, job.id), f"{job.id} to start training", d)
    r = controller(home, "stop", "--wait", "--timeout", str(PATIENCE_S))
    assert r.returncode == 0, r.stderr + d.tail()
    assert d.wait() == 0, d.tail()
    assert status(home)["status"] == "stopped"
    assert q.get(job.id).state == "pending" and (Home(home).pending("normal") / job.id).is_dir()
    assert complete_checkpoints(home, job.id), d.tail()
    first_run = trained_steps(home, job.id)
    assert 0 < len(first_run) < BIG_LINES

    # .stop at the root: same outcome, and the marker is cleared
    d = daemons(home)
    wait_for(training_at(home, job.id, min_step=len(first_run) + 1), f"{job.id} to train again", d)
    Home(home).emergency_stop.touch()
    assert d.wait() == 0, d.tail()
    assert not Home(home).emergency_stop.exists()
    assert q.get(job.id).state == "pending"
    assert complete_checkpoints(home, job.id)

    # a restarted --once daemon finishes it from its checkpoint: every step trained exactly once
    d = daemons(home, "--once")
    assert d.wait() == 0, d.tail()
    done = q.get(job.id)
    assert done.state == "done"
    assert trained_steps(home, job.id) == list(range(1, BIG_LINES + 1))
    assert trained_job_ids(home) == [job.id]
