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

from conftest import REPO, write_config
from trainingd.config import parse_config
from trainingd.memory_plan import estimate, read_shapes


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
