"""The "stream" learning-rate policy: one warm-up per adapter, then a constant rate, and the AdamW state carried
from file to file beside the adapter; exact resume still holds. Real trainer processes on the tiny model.

    .venv/bin/python -m pytest tests/test_stream_schedule.py -x -q
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import PYTHON, REPO, chat_lines, write_jsonl
from trainingd import exit_codes
from trainingd.atomic_ops import read_jsonl
from trainingd.checks.invariants import temp_files
from trainingd.config import ConfigError, parse_config
from trainingd.contracts.adapter_state import read_adapter_state
from trainingd.paths import Home
from trainingd.train import checkpoint as ckpt
from trainingd.train.stream import lr_lambda, read_carried

LR = 1e-3
# 48 examples, 2 per micro-batch, 2 micro-batches per step: 12 optimizer steps per file.
ARGS = ["--epochs", "1", "--max-length", "96", "--batch-size", "2", "--gradient-accumulation", "2",
        "--save-steps", "5", "--learning-rate", str(LR), "--lora-r", "4", "--lora-alpha", "8"]
STREAM = ["--lr-schedule", "stream", "--stream-warmup-steps", "4"]


def train(dataset: Path, model: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, str(REPO / "train.py"), "--dataset", str(dataset), "--model", str(model),
                             "--output-dir", str(out), *ARGS, *extra], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, code: int = exit_codes.OK) -> str:
    log = proc.communicate()[0]
    assert proc.returncode == code, log
    return log


def rates(out: Path) -> list[float]:
    return [r["learning_rate"] for r in sorted(read_jsonl(out / "metrics.jsonl"), key=lambda r: r["step"])
            if "learning_rate" in r]


def adam_steps(out: Path) -> set[int]:
    sd = torch.load(out / "optimizer" / "optimizer.pt", weights_only=True)
    return {int(s["step"]) for s in sd["state"].values()}


def adapters_equal(a: Path, b: Path) -> float:
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys() and x
    return max(float((x[n] - y[n]).abs().max()) for n in x)


def test_the_stream_factor_warms_up_once_then_stays_at_the_peak():
    fresh = lr_lambda(4, 0)
    assert [fresh(s) for s in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    assert [lr_lambda(4, 2)(s) for s in range(3)] == [0.6, 0.8, 1.0]
    assert all(lr_lambda(4, 12)(s) == 1.0 for s in range(50))
    assert lr_lambda(0, 0)(0) == 1.0
    with pytest.raises(ConfigError, match="lr_schedule"):
        parse_config({"lr_schedule": "forever"})
    with pytest.raises(ConfigError, match="stream_warmup_steps"):
        parse_config({"stream_warmup_steps": -1})


@pytest.mark.slow
def test_stream_carries_adamw_across_files_and_a_stopped_job_resumes_to_the_same_adapter(tiny_model, tmp_path):
    first = write_jsonl(tmp_path / "first.jsonl", chat_lines(48, seed=1))
    second = write_jsonl(tmp_path / "second.jsonl", chat_lines(48, seed=2))

    a = tmp_path / "a"
    finish(train(first, tiny_model, a, *STREAM))
    assert rates(a)[:5] == pytest.approx([LR * f for f in (0.2, 0.4, 0.6, 0.8, 1.0)])
    carried = read_carried(a, read_adapter_state(a))
    assert carried is not None and carried["optimizer_steps"] == 12 and adam_steps(a) == {12}

    # The next file continues the same AdamW at the peak rate: no second warm-up, 12 + 12 steps in its moments.
    b = tmp_path / "b"
    log = finish(train(second, a, b, *STREAM))
    assert "carried the optimizer state of 12 steps" in log
    assert rates(b) == pytest.approx([LR] * 12)
    assert adam_steps(b) == {24} and read_carried(b, read_adapter_state(b))["optimizer_steps"] == 24

    # Stopped mid-way and resumed, the same file on the same adapter ends bit-for-bit where the straight run did.
    c = tmp_path / "c"
    proc = train(second, a, c, *STREAM)
    while proc.poll() is None and not any(r.get("step", 0) >= 3 for r in read_jsonl(c / "metrics.jsonl")):
        pass
    proc.send_signal(signal.SIGTERM)
    finish(proc, exit_codes.STOPPED)
    stopped = ckpt.latest_complete(c / "checkpoints")
    assert stopped is not None and int(stopped.name.split("-")[1]) < 12
    finish(train(second, a, c, *STREAM, "--resume"))
    assert adapters_equal(b, c) <= 1e-6
    assert adam_steps(c) == {24}

    # The per-file policy on the same adapter: a fresh AdamW that warms up again, and another adapter.
    d = tmp_path / "d"
    finish(train(second, a, d))
    assert rates(d)[0] < LR and not (d / "optimizer").exists()
    assert adapters_equal(b, d) > 1e-4


def test_a_carried_state_of_another_generation_is_not_used(tmp_path):
    folder = tmp_path / "adapter"
    (folder / "optimizer").mkdir(parents=True)
    (folder / "optimizer" / "optimizer.pt").write_bytes(b"x")
    (folder / "optimizer" / "stream.json").write_text(json.dumps({"generation_id": "g1", "optimizer_steps": 7}))
    assert read_carried(folder, {"generation_id": "g1"})["optimizer_steps"] == 7
    assert read_carried(folder, {"generation_id": "g2"}) is None, "a snapshot put back, a crashed publish"
    assert read_carried(folder, None) is None and read_carried(None, {"generation_id": "g1"}) is None
    (folder / "optimizer" / "stream.json").write_text("{torn")
    assert read_carried(folder, {"generation_id": "g1"}) is None


def test_a_copy_of_the_optimizer_cut_by_a_crash_is_a_temp_file_the_start_up_sweep_finds(tmp_path):
    home = Home.at(tmp_path)
    (home.current_model / "optimizer").mkdir(parents=True)
    torn = home.current_model / "optimizer" / ".optimizer.pt.k2j3.tmp"
    torn.write_bytes(b"half")
    assert torn in temp_files(home)
