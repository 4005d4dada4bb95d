"""The frozen base's precision: bf16 stored (not autocast) on the CPU, ``precision: auto`` by the matmul probe, exact
resume within a precision.

    .venv/bin/pytest tests/test_precision.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import chat_lines, write_jsonl
from trainingd import exit_codes
from trainingd.config import ConfigError, parse_config
from trainingd.contracts import precision_probe
from trainingd.train import checkpoint as ckpt
from trainingd.train.model import choose_precision, cpu_probe, load_model, uses_autocast
from trainingd.train.recipe import RunSpec, run

SMALL = dict(max_length=128, batch_size=2, gradient_accumulation=1, save_steps=2, learning_rate=1e-3,
             warmup_ratio=0.0, lr_scheduler="constant", layer_stats_steps=0)
CPU = torch.device("cpu")


def make_spec(root: Path, tiny_model: Path, dataset: Path, precision: str, **cfg) -> RunSpec:
    out = root / "out"
    return RunSpec(dataset=dataset, base_model=tiny_model, output_dir=out, checkpoint_dir=out / "checkpoints",
                   cfg=parse_config({**SMALL, "base_model": str(tiny_model), **cfg}), job_id="job-1",
                   progress_path=out / "progress.json", metrics_path=out / "metrics.jsonl",
                   cache_dir=root / "cache", precision=precision)


def losses(spec: RunSpec) -> list[float]:
    rows = [json.loads(line) for line in spec.metrics_path.read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("loss") is not None]


def progress_step(spec: RunSpec) -> int:
    try:
        return json.loads(spec.progress_path.read_text())["step"] or 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def write_cached_probe(cache: Path, fp32: float, bf16: float) -> None:
    key = precision_probe.machine_key(torch.__version__, torch.get_num_threads())
    precision_probe.write_probe(cache, key, fp32, bf16, n=1024)


def test_bf16_stores_the_frozen_base_in_bf16_and_keeps_lora_and_its_gradients_in_fp32(tiny_model):
    cfg = parse_config({**SMALL, "base_model": str(tiny_model)})
    model = load_model(tiny_model, cfg, init_adapter=None, device=CPU, precision="bf16")
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trained = [p for p in model.parameters() if p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert not uses_autocast("bf16", CPU)  # nothing re-casts the frozen weights on a CPU
    ids = torch.tensor([[1, 5, 9, 12, 7, 3]])
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for p in trained if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 for g in grads)


def test_the_bf16_path_trains_with_falling_loss(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(16))
    spec = make_spec(tmp_path, tiny_model, ds, "bf16", epochs=3)
    result = run(spec)
    assert result.exit_code == exit_codes.OK, result
    assert result.summary["precision"] == "bf16"
    seen = losses(spec)
    assert len(seen) == 24 and sum(seen[-4:]) / 4 < sum(seen[:4]) / 4 - 0.1, seen
    weights = load_file(spec.output_dir / "adapter_model.safetensors")
    assert all(v.dtype == torch.float32 for v in weights.values())  # the adapter is saved as trained: fp32


def test_a_stopped_bf16_run_resumes_to_the_uninterrupted_adapter(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(12))
    whole = make_spec(tmp_path / "whole", tiny_model, ds, "bf16")
    assert run(whole).exit_code == exit_codes.OK

    parts = make_spec(tmp_path / "parts", tiny_model, ds, "bf16")
    parts.commands = lambda: "stop" if progress_step(parts) >= 3 else "run"
    assert run(parts).exit_code == exit_codes.STOPPED
    newest = ckpt.latest_complete(parts.checkpoint_dir)
    assert json.loads((newest / "manifest.json").read_text())["precision"] == "bf16"
    parts.commands = None
    result = run(parts)
    assert result.exit_code == exit_codes.OK, result
    a = load_file(whole.output_dir / "adapter_model.safetensors")
    b = load_file(parts.output_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0


def test_auto_picks_bf16_on_a_cpu_whose_probe_says_bf16_is_fast_and_fp32_otherwise(tmp_path):
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    write_cached_probe(fast, fp32=126.0, bf16=345.0)  # an AMD EPYC with avx512_bf16
    write_cached_probe(slow, fp32=136.0, bf16=29.0)  # a CPU that emulates bf16
    assert choose_precision("auto", CPU, fast) == "bf16"
    assert choose_precision("auto", CPU, slow) == "fp32"
    assert choose_precision("fp32", CPU, fast) == "fp32" and choose_precision("bf16", CPU, slow) == "bf16"
    with pytest.raises(ValueError):
        choose_precision("fp16", CPU, fast)


def test_the_probe_is_measured_once_per_home_and_machine_and_kept_in_the_cache(tmp_path):
    first = cpu_probe(tmp_path)
    assert not first["cached"] and first["fp32_gflops"] > 0 and first["bf16_gflops"] > 0
    stored = json.loads((tmp_path / precision_probe.FILE).read_text())
    assert stored["schema_version"] == 1 and len(stored["machines"]) == 1
    (key, entry), = stored["machines"].items()
    assert key == precision_probe.machine_key(torch.__version__, torch.get_num_threads())
    assert cpu_probe(tmp_path)["cached"] is True
    # Another machine sharing the home keeps its own entry; a damaged file is probed again.
    precision_probe.write_probe(tmp_path, "other-host|cpu||2.0|8", 10.0, 30.0, n=1024)
    assert set(json.loads((tmp_path / precision_probe.FILE).read_text())["machines"]) == {key, "other-host|cpu||2.0|8"}
    (tmp_path / precision_probe.FILE).write_text("{not json")
    assert cpu_probe(tmp_path)["cached"] is False


def test_precision_is_a_config_key_with_auto_by_default():
    assert parse_config({}).precision == "auto"
    assert parse_config({"precision": "bf16"}).precision == "bf16"
    with pytest.raises(ConfigError, match="precision"):
        parse_config({"precision": "fp8"})


def test_resuming_under_auto_keeps_the_checkpoints_precision_and_an_explicit_other_one_retrains(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(12))
    whole = make_spec(tmp_path / "whole", tiny_model, ds, "bf16")
    assert run(whole).exit_code == exit_codes.OK

    parts = make_spec(tmp_path / "parts", tiny_model, ds, "bf16")
    parts.commands = lambda: "stop" if progress_step(parts) >= 3 else "run"
    assert run(parts).exit_code == exit_codes.STOPPED
    # auto on this home would now pick fp32 (its probe says bf16 is slow); the bf16 checkpoint resumes in bf16.
    write_cached_probe(parts.cache_dir, fp32=136.0, bf16=29.0)
    parts.commands, parts.precision = None, "auto"
    result = run(parts)
    assert result.exit_code == exit_codes.OK and result.summary["precision"] == "bf16", result
    assert "notice" not in result.summary
    a = load_file(whole.output_dir / "adapter_model.safetensors")
    b = load_file(parts.output_dir / "adapter_model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0

    other = make_spec(tmp_path / "other", tiny_model, ds, "bf16")
    other.commands = lambda: "stop" if progress_step(other) >= 3 else "run"
    assert run(other).exit_code == exit_codes.STOPPED
    other.commands, other.precision = None, "fp32"
    result = run(other)
    assert result.exit_code == exit_codes.OK and result.summary["precision"] == "fp32"
    assert "trained in bf16" in result.summary["notice"] and "retraining" in result.summary["notice"]
    assert result.summary["steps"] == 6  # from the start: 12 examples, batch 2


def test_the_status_and_the_controller_say_which_precision_the_job_trains_in():
    from trainingd.cli.formatting import format_summary
    from trainingd.contracts.status import compose_status

    doc = compose_status(daemon={"pid": 1}, status="training", job={"id": "job-1", "file": "a.jsonl"},
                         progress={"precision": "bf16", "step": 2, "total_steps": 6})
    assert doc["job"]["precision"] == "bf16"
    text = format_summary({"status": doc, "queue": [], "daemon_running": True, "home": "/h"})
    assert "precision: bf16" in text
