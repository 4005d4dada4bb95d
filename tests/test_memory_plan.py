"""``trainingd plan``: the memory estimate of the configured run, from the model's headers (no torch).

    .venv/bin/python -m pytest tests/test_memory_plan.py -q

How close the estimate lands to measured peaks is ``bench/memory_plan.py``'s job; these check what it counts.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, write_config
from trainingd.config import parse_config
from trainingd.checks.memory_plan import estimate, read_shapes


def plan_cli(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainingd", "plan", "--home", str(home), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_weights_lora_and_activations_follow_the_settings(tiny_model):
    n = sum(math.prod(s) for s in read_shapes(tiny_model).values())
    base = parse_config({"batch_size": 4, "max_length": 128, "lora": {"r": 8, "alpha": 16}})
    e = estimate(base, tiny_model, device="cpu", bf16=False)
    assert e["weights"] == 4 * n  # fp32 on the CPU
    assert e["lora_and_optimizer"] == 16 * e["lora_params"] > 0
    q = estimate(parse_config({**base.to_dict(), "use_qlora": True}), tiny_model, device="cpu", bf16=False)
    assert q["weights"] < e["weights"]
    ck = estimate(base, tiny_model, device="cpu", bf16=False, gradient_checkpointing=True)
    assert ck["activations"] < e["activations"]
    twice = estimate(base, tiny_model, device="cpu", bf16=False, micro_batch=8)
    assert twice["activations"] == 2 * e["activations"]
    r16 = estimate(parse_config({**base.to_dict(), "lora": {"r": 16, "alpha": 32}}), tiny_model, device="cpu",
                   bf16=False)
    assert r16["lora_params"] == 2 * e["lora_params"]


def headers_only_model(folder: Path, layers: int, hidden: int = 256, vocab: int = 1000) -> Path:
    """A model folder the plan can read (config.json and a safetensors header; no weights: the plan reads none)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": hidden, "num_hidden_layers": layers,
                                                    "num_attention_heads": 4, "vocab_size": vocab,
                                                    "intermediate_size": 4 * hidden}))
    shapes = {"model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden]}
    for i in range(layers):
        for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
            shapes[f"model.layers.{i}.{m}.weight"] = [hidden, hidden]
        shapes[f"model.layers.{i}.mlp.up_proj.weight"] = [4 * hidden, hidden]
    header = json.dumps({k: {"dtype": "F32", "shape": v, "data_offsets": [0, 0]} for k, v in shapes.items()})
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header.encode())
    return folder


def test_fsdp_splits_the_weights_on_gpus_but_keeps_what_a_step_gathers(tmp_path):
    model = headers_only_model(tmp_path / "m", layers=24)
    ddp = parse_config({"distributed": {"num_processes": 4, "strategy": "ddp"}})
    fsdp = parse_config({"distributed": {"num_processes": 4, "strategy": "fsdp"}})
    d, f = (estimate(c, model, device="cuda", bf16=True) for c in (ddp, fsdp))
    shapes = read_shapes(model)
    root = 2 * sum(math.prod(s) for n, s in shapes.items() if ".layers." not in n)  # bf16
    block = 2 * sum(math.prod(s) for n, s in shapes.items() if ".layers.0." in n)
    assert f["weights"] == pytest.approx(d["weights"] / 4 + (root + 2 * block) * 3 / 4)
    assert f["weights"] < d["weights"] / 3
    assert f["lora_and_optimizer"] == d["lora_and_optimizer"] // 4
    assert estimate(fsdp, model, device="cpu", bf16=False)["weights"] == estimate(
        ddp, model, device="cpu", bf16=False)["weights"]  # the host loads it whole before sharding


def test_plan_says_it_fits_or_what_to_change(home):
    r = plan_cli(home)
    assert r.returncode == 0, r.stderr
    assert "fits" in r.stdout and "activations" in r.stdout
    r = plan_cli(home, "--json")
    doc = json.loads(r.stdout)
    assert doc["devices"][0]["fits"] is True and doc["estimate"]["total"] > 0

    write_config(home, batch_size=4096, max_length=32768)  # terabytes of activations
    r = plan_cli(home)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "does NOT fit" in r.stdout and "gradient_checkpointing" in r.stdout and "micro_batch_size" in r.stdout


def test_plan_on_a_fresh_home_builds_the_embedded_base_first(tmp_path):
    fresh = tmp_path / "fresh"  # no config.json: the embedded tiny default, not built yet
    r = plan_cli(fresh, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (fresh / "models" / "tiny-qwen3" / "config.json").is_file()
    assert Path(doc["model"]) == fresh / "models" / "tiny-qwen3" and doc["estimate"]["weights"] > 0
