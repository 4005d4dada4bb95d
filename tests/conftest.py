"""Shared fixtures: the tiny base model is built once per test run; each test gets its own home."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# Keep test subprocesses quiet, offline and small.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Qwen3-architecture model + tokenizer built locally (hidden 64, 2 layers), once per run."""
    from trainingd.train.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen3")


def write_config(home: Path, **overrides) -> dict:
    cfg = json.loads((home / "config.json").read_text()) if (home / "config.json").exists() else {}
    cfg.update(overrides)
    (home / "config.json").write_text(json.dumps(cfg, indent=2))
    return cfg


@pytest.fixture
def home(tmp_path, tiny_model) -> Path:
    """A fresh home whose base model is the session's tiny model, with small fast training settings."""
    h = tmp_path / "home"
    h.mkdir()
    (h / "models").mkdir()
    shutil.copytree(tiny_model, h / "models" / "tiny-qwen3")
    # fp32 whatever the CPU: a tiny random model's logits are nearly flat, and bf16 (what ``precision: auto`` picks
    # on a CPU with fast bf16, AMX or AVX512-BF16) rounds them into ties, so what it learned does not show in
    # greedy answers. bf16 has its own tests (test_precision.py); the real-model tests run at auto.
    write_config(h, base_model=str(h / "models" / "tiny-qwen3"), max_length=128, batch_size=2,
                 gradient_accumulation=1, save_steps=2, learning_rate=1e-3, precision="fp32")
    return h


@pytest.fixture
def two_homes(tmp_path, home):
    """The ``home`` fixture twice (for comparing two runs): same model and data settings, gradient accumulation 2,
    a checkpoint every 3 steps, no periodic evaluation or layer reports."""
    write_config(home, gradient_accumulation=2, layer_stats_steps=0, save_steps=3)
    other = tmp_path / "home2"
    shutil.copytree(home, other)
    write_config(other, base_model=str(other / "models" / "tiny-qwen3"))
    return home, other


def chat_lines(n: int, seed: int = 0) -> list[dict]:
    """n small chat examples in OpenAI `messages` format."""
    import random

    rng = random.Random(seed)
    words = "the model learns to answer questions about data files and the queue quickly".split()
    out = []
    for i in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
        a = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        out.append({"messages": [{"role": "user", "content": f"{q} {i}?"}, {"role": "assistant", "content": a}]})
    return out


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def wait_for(pred, what: str, limit_s: float = 60.0):
    """Poll until ``pred()`` is truthy and return its value; the limit only keeps a broken build from hanging."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")
