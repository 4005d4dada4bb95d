"""The trainer's two command lines, run as real processes.

    .venv/bin/python -m pytest tests/test_train_cli.py -x -q
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import PYTHON, REPO, chat_lines, write_config, write_jsonl
from trainingd import exit_codes

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SMALL = ["--max-length", "96", "--batch-size", "4", "--gradient-accumulation", "1", "--lora-r", "4",
         "--lora-alpha", "8", "--learning-rate", "1e-3"]


def standalone(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(REPO / "train.py"), *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def daemon_mode(home: Path, dataset: Path, reason: Path, job_id: str = "000001-job") -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "trainingd.train", "--home", str(home), "--job-id", job_id,
                           "--dataset", str(dataset), "--reason-file", str(reason)],
                          cwd=home, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_help_lists_every_option():
    out = standalone("--help")
    assert out.returncode == 0
    for flag in ("--dataset", "--model", "--output-dir", "--epochs", "--use-qlora", "--resume", "--config",
                 "--learning-rate", "--batch-size", "--gradient-accumulation", "--max-length", "--lora-r",
                 "--lora-alpha", "--lora-dropout", "--lora-target-modules", "--save-steps", "--eval-fraction",
                 "--packing", "--gradient-checkpointing", "--precision", "--eval-file"):
        assert flag in out.stdout, flag


@pytest.mark.slow
def test_standalone_trains_and_model_adapter_dir_continues_that_adapter(tiny_model, tmp_path):
    first = write_jsonl(tmp_path / "first.jsonl", chat_lines(16, seed=1))
    second = write_jsonl(tmp_path / "second.jsonl", chat_lines(16, seed=2))
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    r = standalone("--dataset", str(first), "--model", str(tiny_model), "--output-dir", str(out1), "--epochs", "1",
                   "--eval-fraction", "0.25", *SMALL)
    assert r.returncode == exit_codes.OK, r.stdout
    summary = json.loads(r.stdout[r.stdout.index("{\n"):])["summary"]
    assert summary["steps"] == 3 and summary["eval_loss"] is not None  # 12 train examples / batch 4
    w1 = load_file(out1 / "adapter_model.safetensors")

    # Continue the adapter: no LoRA options needed, its base comes from adapter_config.json. A tiny learning rate
    # shows it started from out1's weights (a new LoRA would start with lora_B at zero, far from out1's).
    r = standalone("--dataset", str(second), "--model", str(out1), "--output-dir", str(out2), "--epochs", "1",
                   "--job-id", "second", "--max-length", "96", "--batch-size", "4", "--gradient-accumulation", "1",
                   "--learning-rate", "1e-7")
    assert r.returncode == exit_codes.OK, r.stdout
    w2 = load_file(out2 / "adapter_model.safetensors")
    assert w1.keys() == w2.keys()
    assert 0 < max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-4
    assert max(float(w1[k].abs().max()) for k in w1 if "lora_B" in k) > 1e-3
    cfg2 = json.loads((out2 / "adapter_config.json").read_text())
    assert Path(cfg2["base_model_name_or_path"]).resolve() == tiny_model.resolve() and cfg2["r"] == 4
    state = json.loads((out2 / "adapter_state.json").read_text())
    assert [t["file"] for t in state["trained"]] == ["first.jsonl", "second.jsonl"]

    # Changing a locked setting of an existing adapter is refused, naming the key.
    r = standalone("--dataset", str(second), "--model", str(out2), "--output-dir", str(tmp_path / "out3"),
                   "--lora-r", "8", "--max-length", "96")
    assert r.returncode == exit_codes.ADAPTER_MISMATCH, r.stdout
    assert "'lora.r'" in r.stdout


def test_daemon_mode_config_error_data_error_and_adapter_mismatch_write_the_reason_file(home, tmp_path):
    reason = tmp_path / "result.json"
    good = write_jsonl(tmp_path / "good.jsonl", chat_lines(4))

    (home / "config.json").write_text('{"batch_sise": 2}')
    r = daemon_mode(home, good, reason)
    assert r.returncode == exit_codes.CONFIG_ERROR, r.stdout
    out = json.loads(reason.read_text())
    assert out["exit"] == "config_error" and "batch_sise" in out["reason"] and "batch_sise" in r.stdout

    (home / "config.json").write_text("{}")
    write_config(home, base_model=str(home / "models" / "tiny-qwen3"), max_length=96)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "not a list"}\nnot json\n')
    r = daemon_mode(home, bad, reason)
    assert r.returncode == exit_codes.DATA_ERROR, r.stdout
    out = json.loads(reason.read_text())
    assert out["exit"] == "data_error" and out["reason"] and out["details"]

    # current_model/ made with other locked settings: refused before anything is trained.
    cm = home / "current_model"
    cm.mkdir(exist_ok=True)
    (cm / "adapter_config.json").write_text("{}")
    (cm / "adapter_model.safetensors").write_bytes(b"")
    from trainingd.config import load_config
    from trainingd.train.checkpoint import base_model_hash

    locked = {**load_config(home / "config.json").locked_values(), "lora.r": 64}
    (cm / "adapter_state.json").write_text(json.dumps({
        "base_model": str(home / "models" / "tiny-qwen3"),
        "base_model_hash": base_model_hash(home / "models" / "tiny-qwen3"), "locked": locked, "trained": []}))
    r = daemon_mode(home, good, reason)
    assert r.returncode == exit_codes.ADAPTER_MISMATCH, r.stdout
    out = json.loads(reason.read_text())
    assert out["exit"] == "adapter_mismatch" and "'lora.r'" in out["reason"]


def test_daemon_mode_exits_stopped_when_its_parent_is_not_the_named_daemon(home, tmp_path):
    """--parent-pid names the daemon; a trainer whose parent is someone else (the daemon died) does not train."""
    reason = tmp_path / "result.json"
    good = write_jsonl(tmp_path / "good.jsonl", chat_lines(4))
    r = subprocess.run([PYTHON, "-m", "trainingd.train", "--home", str(home), "--job-id", "000002-x",
                        "--dataset", str(good), "--reason-file", str(reason), "--parent-pid", str(os.getpid() + 10**6)],
                       cwd=home, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == exit_codes.STOPPED, r.stdout
    assert json.loads(reason.read_text())["exit"] == "stopped"
    assert not (home / "current_model" / "adapter_model.safetensors").exists()
