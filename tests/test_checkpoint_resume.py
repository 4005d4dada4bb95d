"""Exact resume with real processes: SIGTERM at step k, resume, and the adapter equals an uninterrupted run's.

    .venv/bin/python -m pytest tests/test_checkpoint_resume.py -x -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import PYTHON, REPO, chat_lines, write_jsonl
from trainingd import exit_codes
from trainingd.atomic_ops import read_jsonl
from trainingd.train import checkpoint as ckpt

# Batch 1 and 48 examples: 48 short optimizer steps, so a stop lands well before the end.
ARGS = ["--epochs", "2", "--max-length", "96", "--batch-size", "2", "--gradient-accumulation", "2",
        "--save-steps", "5", "--learning-rate", "1e-3", "--lora-r", "4", "--lora-alpha", "8"]


def train(dataset: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, str(REPO / "train.py"), "--dataset", str(dataset), "--model", str(model),
                             "--output-dir", str(out), *ARGS, *extra], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_step(out: Path, proc: subprocess.Popen, step: int) -> None:
    """Block until metrics.jsonl records ``step`` (or the process ends)."""
    while proc.poll() is None:
        if any(r.get("step", 0) >= step for r in read_jsonl(out / "metrics.jsonl")):
            return
        time.sleep(0.02)


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
def test_sigterm_then_resume_ends_with_the_uninterrupted_adapter(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "data.jsonl", chat_lines(48, seed=5))
    full = tmp_path / "full"
    proc = train(ds, tiny_model, full)
    log = proc.communicate()[0]
    assert proc.returncode == exit_codes.OK, log

    part = tmp_path / "part"
    proc = train(ds, tiny_model, part)
    wait_for_step(part, proc, 3)
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate()[0]
    assert proc.returncode == exit_codes.STOPPED, log
    stopped = ckpt.latest_complete(part / "checkpoints")
    assert stopped is not None
    k = int(stopped.name.split("-")[1])
    total = json.loads((stopped / "state.json").read_text())["total_steps"]
    assert 3 <= k < total, (k, total)  # the signal landed mid-run, not after the end
    assert not (part / "adapter_model.safetensors").exists()

    # Without --resume an existing checkpoint is never silently overwritten.
    proc = train(ds, tiny_model, part)
    log = proc.communicate()[0]
    assert proc.returncode == exit_codes.USAGE and "--resume" in log

    proc = train(ds, tiny_model, part, "--resume")
    log = proc.communicate()[0]
    assert proc.returncode == exit_codes.OK, log
    assert f"resumed from {stopped}" in log

    a = load_file(full / "adapter_model.safetensors")
    b = load_file(part / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    assert max(float((a[n] - b[n]).abs().max()) for n in a) <= 1e-6
    full_losses, part_losses = losses(full), losses(part)
    assert sorted(full_losses) == list(range(1, total + 1))
    for step in range(k + 1, total + 1):
        assert abs(full_losses[step] - part_losses[step]) <= 1e-6, step
    assert not (part / "checkpoints").exists() or not list((part / "checkpoints").iterdir())


@pytest.mark.slow
def test_daemon_mode_stop_file_checkpoints_then_the_rerun_resumes_and_publishes(home, tmp_path):
    """The daemon's command line: `.stop` -> STOPPED with a checkpoint; the rerun resumes and publishes once."""
    from conftest import write_config

    write_config(home, save_steps=100, epochs=2)
    ds = write_jsonl(home / "job" / "my data.jsonl", chat_lines(24))
    reason = home / "job" / "result.json"
    cmd = [PYTHON, "-m", "trainingd.train", "--home", str(home), "--job-id", "000001-my_data", "--dataset", str(ds),
           "--reason-file", str(reason), "--parent-pid", str(os.getpid())]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    progress = home / "status" / "trainer_progress.json"
    statuses = set()
    while proc.poll() is None:
        try:
            p = json.loads(progress.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            p = {}
        statuses.add(p.get("status"))
        if (p.get("step") or 0) >= 2:
            (home / ".stop").touch()
            break
        time.sleep(0.02)
    log = proc.communicate()[0]
    assert proc.returncode == exit_codes.STOPPED, log
    assert json.loads(reason.read_text())["exit"] == "stopped"
    ckpts = ckpt.list_complete(home / "current_model" / "checkpoints" / "000001-my_data")
    assert ckpts  # the stop itself checkpointed (save_steps=100 would not have)
    assert not (home / "current_model" / "adapter_model.safetensors").exists()
    assert "training" in statuses and p["pid"] == proc.pid and p["job_id"] == "000001-my_data"

    (home / ".stop").unlink()
    proc = subprocess.run(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == exit_codes.OK, proc.stdout
    assert "resumed from" in proc.stdout
    result = json.loads(reason.read_text())
    assert result["exit"] == "ok" and result["summary"]["steps"] == result["summary"]["total_steps"]
    assert result["summary"]["data"]["sha256"]
    state = json.loads((home / "current_model" / "adapter_state.json").read_text())
    assert [t["job_id"] for t in state["trained"]] == ["000001-my_data"]
    assert state["trained"][0]["file"] == "my data.jsonl"
    assert not (home / "current_model" / "checkpoints" / "000001-my_data").exists()
    metrics = read_jsonl(home / "status" / "metrics.jsonl")
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, result["summary"]["steps"] + 1))

    # A rerun after publishing (crash before the daemon moved the job) trains nothing and lists the job once.
    before = (home / "current_model" / "adapter_model.safetensors").read_bytes()
    proc = subprocess.run(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == exit_codes.OK, proc.stdout
    assert (home / "current_model" / "adapter_model.safetensors").read_bytes() == before
    state = json.loads((home / "current_model" / "adapter_state.json").read_text())
    assert len(state["trained"]) == 1


@pytest.mark.slow
def test_a_crash_in_the_middle_of_publishing_republishes_the_same_weights_without_training_again(home, tmp_path):
    from conftest import write_config

    write_config(home, save_steps=100)
    ds = write_jsonl(home / "job" / "a.jsonl", chat_lines(12))
    reason = home / "job" / "result.json"
    cmd = [PYTHON, "-m", "trainingd.train", "--home", str(home), "--job-id", "000007-a", "--dataset", str(ds),
           "--reason-file", str(reason)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    crashed = subprocess.run(cmd, cwd=home, env={**env, "TRAININGD_CRASH_AT": "publish:1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout
    cm = home / "current_model"
    published = (cm / "adapter_model.safetensors").read_bytes()  # the weights were replaced ...
    assert not (cm / "adapter_state.json").exists()  # ... but the job is not recorded as trained
    assert ckpt.latest_complete(cm / "checkpoints" / "000007-a") is not None
    steps = [m["step"] for m in read_jsonl(home / "status" / "metrics.jsonl")]

    proc = subprocess.run(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == exit_codes.OK, proc.stdout
    assert (cm / "adapter_model.safetensors").read_bytes() == published
    state = json.loads((cm / "adapter_state.json").read_text())
    assert [t["job_id"] for t in state["trained"]] == ["000007-a"]
    assert [m["step"] for m in read_jsonl(home / "status" / "metrics.jsonl")] == steps  # no step trained twice
    assert not (cm / "checkpoints" / "000007-a").exists()
