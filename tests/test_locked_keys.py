"""Locked keys approved for the live adapter, the home check of config_validator.py, and the base model guard.

Run: .venv/bin/python -m pytest tests/test_locked_keys.py -q      (``-m "not slow"`` leaves out real training)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import chat_lines, write_config, write_jsonl
from trainingd.lifecycle import home_guard as home_guard

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
LORA = {"lora.r": 16, "lora.alpha": 32,
        "lora.target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def validator(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / "config_validator.py"), "--home", str(root), *argv], capture_output=True,
                          text=True, env=ENV, timeout=120)


def adapter_state(root: Path, **locked) -> None:
    cm = root / "current_model"
    cm.mkdir(parents=True, exist_ok=True)
    from trainingd.lifecycle.approval import base_hash

    base = str(root / "models" / "tiny-qwen3")
    (cm / "adapter_state.json").write_text(json.dumps({
        "base_model": base, "base_model_hash": base_hash(Path(base)), "locked": {"base_model": base, **LORA, **locked},
        "generation": 1, "generation_id": "g1", "trained": []}))


def state(root: Path) -> dict:
    return json.loads((root / "current_model" / "adapter_state.json").read_text())


def test_a_base_model_change_is_refused_then_approved_with_who_and_when(home):
    adapter_state(home, base_model="/old/place/of/the/base")
    r = validator(home)
    assert r.returncode == 3
    assert "'base_model'" in r.stderr and "/old/place/of/the/base" in r.stderr and "--approve" in r.stderr
    r = validator(home, "--approve", "--who", "ops")
    assert r.returncode == 0, r.stderr
    assert "approved" in r.stdout and "ops" in r.stdout
    s = state(home)
    assert s["locked"]["base_model"] == str(home / "models" / "tiny-qwen3")
    assert s[home_guard.FIELD] == home_guard.content_hash(home / "models" / "tiny-qwen3")
    (record,) = [json.loads(line) for line in (home / "logs" / "approvals.jsonl").read_text().splitlines()]
    assert record["who"] == "ops" and record["at"] and record["changes"][0]["key"] == "base_model"
    assert validator(home).returncode == 0
    r = subprocess.run([PY, "-m", "trainingd", "--home", str(home), "config", "approve"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0 and "nothing to approve" in r.stdout


def test_a_lora_shape_change_cannot_be_approved_and_every_problem_is_listed(home):
    adapter_state(home, **{"lora.r": 8, "lora.alpha": 16})
    r = validator(home)
    assert r.returncode == 3
    assert "'lora.r'" in r.stderr and "'lora.alpha'" in r.stderr and "2 problems" in r.stderr
    before = state(home)
    r = subprocess.run([PY, "-m", "trainingd", "--home", str(home), "config", "approve"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1
    assert "cannot be approved" in r.stderr and "trainingd adapter new" in r.stderr
    assert state(home) == before and not (home / "logs" / "approvals.jsonl").exists()


def test_the_home_check_names_a_missing_base_and_a_changed_base(home):
    write_config(home, base_model=str(home / "nowhere"))
    r = validator(home)
    assert r.returncode == 3 and "nowhere" in r.stderr
    write_config(home, base_model=str(home / "models" / "tiny-qwen3"))
    adapter_state(home)
    assert validator(home).returncode == 0
    (home / "models" / "tiny-qwen3" / "config.json").write_text(
        (home / "models" / "tiny-qwen3" / "config.json").read_text().replace("{", '{"extra": 1, ', 1))
    r = validator(home)
    assert r.returncode == 3 and "changed since the adapter was trained" in r.stderr


def test_the_content_hash_is_cached_by_stat_and_sees_one_changed_byte(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    weights = base / "model.safetensors"
    weights.write_bytes(bytes(1000))
    cache = tmp_path / "cache"
    first = home_guard.content_hash(base, cache)
    cached = json.loads((cache / "base_hash.json").read_text())[str(base.resolve())]
    assert cached["sha256"] == first
    # A cache entry whose stamp still matches is used as is (proved by planting a different value).
    cached["sha256"] = "planted"
    (cache / "base_hash.json").write_text(json.dumps({str(base.resolve()): cached}))
    assert home_guard.content_hash(base, cache) == "planted"
    data = bytearray(weights.read_bytes())
    data[500] ^= 1
    weights.write_bytes(bytes(data))  # same size; the stat stamp (mtime) changes
    assert home_guard.content_hash(base, cache) not in ("planted", first)


def drop(root: Path, name: str, seed: int) -> None:
    tmp = write_jsonl(root / "inbox" / f".{name}.tmp", chat_lines(12, seed=seed))
    tmp.rename(root / "inbox" / name)


def once(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / "training_daemon.py"), "--home", str(root), "--once"], capture_output=True,
                          text=True, env=ENV, timeout=600)


@pytest.mark.slow
def test_a_changed_locked_key_holds_the_daemon_until_approved_and_a_changed_base_byte_stops_jobs(home):
    drop(home, "one.jsonl", 1)
    assert once(home).returncode == 0
    assert state(home)[home_guard.FIELD]
    # The base moves to another folder (same content): a locked key changed, refused until approved.
    moved = home / "models" / "moved-base"
    shutil.copytree(home / "models" / "tiny-qwen3", moved)
    write_config(home, base_model=str(moved))
    drop(home, "two.jsonl", 2)
    r = once(home)
    assert r.returncode == 3
    st = json.loads((home / "status" / "training_status.json").read_text())
    assert st["condition"]["kind"] == "adapter_mismatch" and "base_model" in st["condition"]["message"]
    assert "config_validator.py --approve" in " ".join(st["condition"]["ways_out"])
    assert validator(home, "--approve").returncode == 0
    r = once(home)
    assert r.returncode == 0, r.stderr
    assert [t["file"] for t in state(home)["trained"]] == ["one.jsonl", "two.jsonl"]
    # One byte of the base's weights changes: the next job does not start.
    weights = moved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    drop(home, "three.jsonl", 3)
    r = once(home)
    assert r.returncode == 3
    st = json.loads((home / "status" / "training_status.json").read_text())
    assert st["condition"]["kind"] == "base_changed", st["condition"]
    assert "changed since the live adapter was trained" in st["condition"]["message"]
    assert st["queue"]["failed"] == 0 and st["queue"]["done"] == 2
    assert [t["file"] for t in state(home)["trained"]] == ["one.jsonl", "two.jsonl"]


def test_a_publish_keeps_the_recorded_content_hash_and_approvals_only_while_the_base_is_the_same():
    from trainingd.contracts.adapter_state import next_state

    prev = {"base_model_hash": "b1", home_guard.FIELD: "c1", "approvals": [{"who": "ops"}], "generation": 1,
            "restored_from": "snap"}
    kw = {"entry": {"job_id": "j2", "sha256": "s2"}, "base_model": "/b", "locked": {}, "model_name": "m"}
    same = next_state(prev, base_model_hash="b1", **kw)
    assert same[home_guard.FIELD] == "c1" and same["approvals"] == [{"who": "ops"}]
    assert "restored_from" not in same
    other = next_state(prev, base_model_hash="b2", **kw)
    assert home_guard.FIELD not in other and "approvals" not in other
