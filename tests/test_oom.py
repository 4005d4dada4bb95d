"""Out-of-memory recovery, through an injected ``torch.OutOfMemoryError`` (``TRAININGD_OOM_AT=step:N``).

    .venv/bin/python -m pytest tests/test_oom.py -x -q

The trainer halves the examples per forward pass and redoes the step: the job finishes with the adapter of a run
that used the smaller micro-batch from the start, and status and the log record the new sizes. At one example per
forward pass it gives up and names the example.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import PYTHON, REPO, chat_lines, write_jsonl
from trainingd import exit_codes

pytestmark = pytest.mark.slow

# fp32 on every CPU: an OOM after some steps changes only rounding, and the bound below is fp32's (a bf16 base,
# which ``auto`` picks on a CPU with fast bf16, rounds the two micro-batch sizes' sums apart by ~1e-3).
ARGS = ["--max-length", "96", "--batch-size", "4", "--gradient-accumulation", "2", "--save-steps", "2",
        "--learning-rate", "1e-3", "--lora-r", "4", "--lora-alpha", "8", "--precision", "fp32"]


def train(dataset: Path, model: Path, out: Path, *extra: str, oom: str | None = None) -> tuple[int, str]:
    env = {**os.environ}
    env.pop("TRAININGD_OOM_AT", None)
    if oom:
        env["TRAININGD_OOM_AT"] = oom
    proc = subprocess.run([PYTHON, str(REPO / "train.py"), "--dataset", str(dataset), "--model", str(model),
                           "--output-dir", str(out), *ARGS, *extra], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def diff(a: Path, b: Path) -> float:
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys() and x
    return max(float((x[n] - y[n]).abs().max()) for n in x)


def test_an_oom_halves_the_micro_batch_and_ends_with_the_smaller_micro_batch_adapter(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "data.jsonl", chat_lines(32, seed=7))
    small = tmp_path / "small"
    code, log = train(ds, tiny_model, small, "--micro-batch-size", "2")
    assert code == exit_codes.OK, log

    # an OOM in the first step (after one forward's gradients were accumulated): the rest runs at 2 per forward
    first = tmp_path / "first"
    code, log = train(ds, tiny_model, first, oom="step:1")
    assert code == exit_codes.OK, log
    assert "micro-batch 4 -> 2 examples per forward pass" in log
    assert diff(small, first) == 0.0  # bit for bit: the redone step starts from cleared gradients

    # an OOM later: the steps before it ran 4 per forward, so only rounding differs
    later = tmp_path / "later"
    code, log = train(ds, tiny_model, later, oom="step:3")
    assert code == exit_codes.OK, log
    assert diff(small, later) <= 1e-6
    progress = json.loads((later / "progress.json").read_text())
    assert progress["micro_batch_size"] == 2 and progress["gradient_accumulation"] == 4
    result = json.loads((later / "result.json").read_text())
    assert result["summary"]["micro_batch_size"] == 2 and result["summary"]["steps"] == 4


def test_an_example_that_alone_does_not_fit_fails_the_job_by_name(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "data.jsonl", chat_lines(16, seed=8))
    out = tmp_path / "out"
    code, log = train(ds, tiny_model, out, oom="step:1:always")
    assert code == exit_codes.DATA_ERROR, log
    assert "micro-batch 4 -> 2" in log and "micro-batch 2 -> 1" in log
    reason = json.loads((out / "result.json").read_text())["reason"]
    assert "one example per forward pass" in reason and "example " in reason and "tokens" in reason, reason


def test_a_trainer_killed_by_the_host_retries_with_half_the_micro_batch(home, tmp_path, monkeypatch):
    """The kernel's OOM killer, as the daemon sees it: SIGKILL and the cgroup's oom_kill counter up by one (a file
    stands in for the counter: a real OOM kill cannot be arranged here). The retry halves the micro-batch."""
    import signal

    from conftest import write_config
    from test_steering import Daemon, status, training_at, wait_for
    from trainingd.contracts.progress import read_progress
    from trainingd.jobqueue import JobQueue
    from trainingd.paths import Home

    events = tmp_path / "memory.events"
    events.write_text("oom 0\noom_kill 0\n")
    monkeypatch.setenv("TRAININGD_OOM_EVENTS", str(events))
    write_config(home, batch_size=4, gradient_accumulation=1, save_steps=2, layer_stats_steps=0)
    q = JobQueue(Home(home))
    q.ensure_dirs()
    job = q.add(write_jsonl(tmp_path / "big.jsonl", chat_lines(2000)))
    d = Daemon(home)
    try:
        wait_for(training_at(home, job.id, min_step=3), "training", d)
        progress = read_progress(Home(home), job.id)
        assert progress["micro_batch_size"] == 4
        events.write_text("oom 1\noom_kill 1\n")
        os.kill(progress["pid"], signal.SIGKILL)
        wait_for(lambda: (read_progress(Home(home), job.id) or {}).get("micro_batch_size") == 2
                 and status(home).get("status") == "training", "the retry at micro-batch 2", d)
        assert "the host ran out of memory" in d.log.read_text()
        assert status(home)["job"]["batch"]["micro_batch_size"] == 2
        assert "micro-batch 2 examples per forward pass" in (Home(home).training_log).read_text()
    finally:
        d.close()
