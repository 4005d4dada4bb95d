"""Two trainer processes on this CPU (torchrun, gloo), started and steered by a real daemon.

    .venv/bin/python -m pytest tests/test_distributed.py -x -q

* a file trained with ``distributed.num_processes: 2`` gives the adapter of one process with twice the
  micro-batch (the same examples in the same optimizer steps; only float rounding differs: |diff| <= 1e-5);
* pause, resume, skip and stop reach both ranks at the same step, and nothing is left running;
* a job stopped mid-way and resumed by the next daemon (2 processes) ends with the uninterrupted adapter;
  a different process count is refused with a clear reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from conftest import chat_lines, write_config, write_jsonl
from test_steering import (PATIENCE_S, REPO, Daemon, controller, job_step, status, trained_steps, training_at,
                           wait_for)
from trainingd.atomic_ops import read_json, read_jsonl
from trainingd.jobqueue import JobQueue
from trainingd.paths import Home

pytestmark = pytest.mark.slow

TOLERANCE = 1e-5  # max |a - b| over every adapter weight: padding widths differ, so matmul rounding does
TWO = {"num_processes": 2, "mixed_precision": "auto", "strategy": "ddp", "config_file": None,
       "main_process_port": None}


def adapter(home: Path) -> dict:
    return load_file(Home(home).current_model / "adapter_model.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def train_once(home: Path, data: Path) -> dict:
    """Queue ``data``, run a daemon until the queue is empty, return the trainer's summary of the job."""
    q = JobQueue(Home(home))
    q.ensure_dirs()
    job = q.add(data)
    d = Daemon(home, "--once")
    try:
        assert d.wait() == 0, d.tail()
    finally:
        d.close()
    done = q.get(job.id)
    assert done.state == "done", d.tail()
    return done.meta["result"]


def trainer_processes(home: Path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "trainingd.train" in cmd and str(home) in cmd:
            out.append(p)
    return out


def test_two_processes_train_the_adapter_of_one_with_twice_the_micro_batch(two_homes, tmp_path):
    one, two = two_homes
    data = write_jsonl(tmp_path / "data.jsonl", chat_lines(24, seed=3))
    write_config(one, batch_size=4)
    write_config(two, batch_size=2, distributed=TWO)
    h1 = train_once(one, data)
    h2 = train_once(two, data)
    assert h1["num_processes"] == 1 and h2["num_processes"] == 2
    assert h1["steps"] == h2["steps"] == 3  # 24 examples / (4 per micro-batch x 2)
    assert h1["examples"] == h2["examples"] == 24  # every example once
    a, b = adapter(one), adapter(two)
    assert max(float(t.abs().max()) for n, t in a.items() if "lora_B" in n) > 1e-3  # training moved it
    diff = max_diff(a, b)
    assert diff <= TOLERANCE, diff
    # the losses each process count logged agree too
    l1 = [r["loss"] for r in read_jsonl(Home(one).metrics) if r.get("loss") is not None]
    l2 = [r["loss"] for r in read_jsonl(Home(two).metrics) if r.get("loss") is not None]
    assert l1 == pytest.approx(l2, rel=1e-5)


def test_pause_resume_skip_and_stop_reach_both_ranks(home, tmp_path):
    write_config(home, batch_size=1, gradient_accumulation=1, save_steps=500, rescan_interval_s=1.0,
                 layer_stats_steps=0, distributed=TWO)
    q = JobQueue(Home(home))
    q.ensure_dirs()
    big = q.add(write_jsonl(tmp_path / "big.jsonl", chat_lines(2000)))
    d = Daemon(home)
    try:
        wait_for(training_at(home, big.id), f"{big.id} to start training", d)
        ranks = trainer_processes(home)
        assert len(ranks) >= 3, ranks  # the launcher and its two workers

        r = controller(home, "pause", "--wait", "--timeout", str(PATIENCE_S))
        assert r.returncode == 0, r.stderr + d.tail()
        paused_step = job_step(home, big.id)
        held_since = time.monotonic()
        while time.monotonic() - held_since < 2.0:
            assert job_step(home, big.id) == paused_step and status(home)["status"] == "paused"
            time.sleep(0.2)
        r = controller(home, "resume", "--wait", "--timeout", str(PATIENCE_S))
        assert r.returncode == 0, r.stderr
        wait_for(lambda: (job_step(home, big.id) or 0) > paused_step, "the step to advance after resume", d)
        steps = trained_steps(home, big.id)
        assert steps == list(range(1, len(steps) + 1))  # one writer, no step lost or repeated

        r = controller(home, "skip", "--wait", "--timeout", str(PATIENCE_S))
        assert r.returncode == 0, r.stderr + d.tail()
        assert q.get(big.id).state == "failed"
        assert "skipped" in (q.get(big.id).dir / "reason.txt").read_text()
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ranks),
                 "every rank to exit", d)

        nxt = q.add(write_jsonl(tmp_path / "next.jsonl", chat_lines(2000, seed=1)))
        wait_for(training_at(home, nxt.id, min_step=2), f"{nxt.id} to train", d)
        r = controller(home, "stop", "--wait", "--timeout", str(PATIENCE_S))
        assert r.returncode == 0, r.stderr + d.tail()
        assert d.wait() == 0, d.tail()
        assert q.get(nxt.id).state == "pending"  # stopped, not failed: back at the head of its queue
        last = sorted(Home(home).job_checkpoints(nxt.id).glob("step-*/COMPLETE"))[-1].parent
        state = json.loads((last / "state.json").read_text())
        assert state["world_size"] == 2 and [p["rank"] for p in state["rank_positions"]] == [0, 1]
        assert (last / "rng.pt").is_file() and (last / "rng-rank1.pt").is_file()
        assert trainer_processes(home) == []
    finally:
        d.close()


def stop_mid_way(full: Path, part: Path, tmp_path: Path, distributed: dict):
    """Train a 150-step file uninterrupted in ``full``; in ``part`` stop the same file after a few steps (it goes
    back to pending with a checkpoint). Returns the job in ``part``."""
    data = write_jsonl(tmp_path / "data.jsonl", chat_lines(600, seed=4))  # 150 steps: a stop lands mid-way
    for h in (full, part):
        write_config(h, batch_size=1, gradient_accumulation=2, save_steps=2, distributed=distributed)
    train_once(full, data)

    q = JobQueue(Home(part))
    q.ensure_dirs()
    job = q.add(data)
    d = Daemon(part)
    try:
        wait_for(training_at(part, job.id, min_step=3), "a few steps", d)
        r = controller(part, "stop", "--wait", "--timeout", str(PATIENCE_S))
        assert r.returncode == 0, r.stderr + d.tail()
        assert d.wait() == 0, d.tail()
    finally:
        d.close()
    stopped_at = max(trained_steps(part, job.id))
    assert 3 <= stopped_at < 150 and q.get(job.id).state == "pending"
    return job


def refused_reason(home: Path, job) -> str:
    """Run the daemon once on a job whose checkpoint the config cannot continue: the job fails; its reason."""
    d = Daemon(home, "--once")
    try:
        d.wait()
    finally:
        d.close()
    failed = JobQueue(Home(home)).get(job.id)
    assert failed.state == "failed"
    return (failed.dir / "reason.txt").read_text()


def retry_to_the_end(home: Path, job) -> None:
    """Put a failed job back (``training_queue.py retry``) and let the daemon finish it from its checkpoint."""
    r = subprocess.run([sys.executable, str(REPO / "training_queue.py"), "retry", job.id, "--home", str(home)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    d = Daemon(home, "--once")
    try:
        assert d.wait() == 0, d.tail()
    finally:
        d.close()
    assert JobQueue(Home(home)).get(job.id).state == "done", d.tail()
    assert "resumed from" in Home(home).training_log.read_text()


def test_two_process_resume_is_exact_and_another_process_count_is_refused(two_homes, tmp_path):
    full, part = two_homes
    job = stop_mid_way(full, part, tmp_path, TWO)

    # one process cannot continue a two-process checkpoint: refused, the reason says what to do
    write_config(part, distributed={**TWO, "num_processes": 1})
    reason = refused_reason(part, job)
    assert "2 training process(es)" in reason and "num_processes" in reason, reason

    # put it back and resume with two processes: the uninterrupted adapter
    write_config(part, distributed=TWO)
    retry_to_the_end(part, job)
    assert max_diff(adapter(full), adapter(part)) <= 1e-6
    assert read_json(Home(part).current_model / "adapter_state.json")["trained"][-1]["job_id"] == job.id
