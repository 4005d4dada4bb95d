"""Consolidation: a verified merge into consolidated_models/<stamp>/, from LoRA and QLoRA adapters alike.

Run: .venv/bin/python -m pytest tests/test_consolidate.py -q        (every test here trains: all slow)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import chat_lines, write_config, write_jsonl
from trainingd.lifecycle import snapshots as snapshots
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def train_one(root: Path, name: str, seed: int) -> None:
    tmp = write_jsonl(root / "inbox" / f".{name}.tmp", chat_lines(16, seed=seed))
    tmp.rename(root / "inbox" / name)
    r = subprocess.run([PY, str(REPO / "training_daemon.py"), "--home", str(root), "--once"], capture_output=True,
                       text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert (root / "current_model" / "adapter_model.safetensors").exists(), r.stderr


def consolidate(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / "consolidate_model.py"), "--home", str(root), *argv], capture_output=True,
                          text=True, env=ENV, timeout=600)


def bases(root: Path) -> list[str]:
    folder = root / "consolidated_models"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("qlora", [False, True], ids=["lora", "qlora"])
def test_a_consolidated_base_reproduces_base_plus_adapter(home, qlora):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainingd.train.merge import PROMPTS, compare, prompt_logits

    write_config(home, use_qlora=qlora, learning_rate=5e-3)
    train_one(home, "one.jsonl", 1)
    config_before = (home / "config.json").read_text()
    r = consolidate(home, "--description", "chat lines, one file", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    folder = Path(out["consolidated"])
    assert folder.parent == home / "consolidated_models" and bases(home) == [folder.name]
    manifest = json.loads((folder / "manifest.json").read_text())
    v = manifest["verification"]
    assert v["ok"] and v["max_abs_logit_diff"] <= 1e-3 and v["mean_kl"] <= 1e-6 and v["tokens"] > 20
    assert manifest["description"] == "chat lines, one file"
    assert [t["file"] for t in manifest["files_trained"]] == ["one.jsonl"]
    assert manifest["parent_base"]["path"] == str((home / "models" / "tiny-qwen3").resolve())
    assert manifest["backup_snapshot"] in manifest["snapshots_merged"]
    assert "chat lines, one file" in (folder / "README.md").read_text()
    assert (home / "config.json").read_text() == config_before, "without --yes config.json is untouched"
    assert "consolidate_model.py --switch consolidated_models/" in out["switch_command"]

    # Independently of the script's own check: the saved model equals base + adapter, and differs from the base.
    base_dir = home / "models" / "tiny-qwen3"
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    merged = prompt_logits(AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval(), tok)
    base = prompt_logits(AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval(), tok)
    moved = compare(base, merged)["max_abs_logit_diff"]
    assert moved > 20 * v["max_abs_logit_diff"], (moved, v)
    assert len(PROMPTS) == v["prompts"]


@pytest.mark.slow
def test_a_failed_verification_leaves_no_base_and_yes_switches_to_a_verified_one(home):
    from trainingd.lifecycle.consolidate import ConsolidationError, consolidate as run

    train_one(home, "one.jsonl", 1)
    h = Home.at(home)
    adapter = (home / "current_model" / "adapter_model.safetensors").read_bytes()

    # One weight off by a little, after the merge and before the save (in the merge's own process).
    with pytest.raises(ConsolidationError, match="verification failed"):
        run(h, "spoiled", merge_command=[PY, str(REPO / "tests" / "tools" / "spoiled_merge.py")])
    assert bases(home) == [], "a failed check leaves nothing under consolidated_models/, not even a temp folder"
    assert (home / "current_model" / "adapter_model.safetensors").read_bytes() == adapter

    r = consolidate(home, "--description", "first consolidation", "--yes")
    assert r.returncode == 0, r.stderr
    (name,) = bases(home)
    cfg = json.loads((home / "config.json").read_text())
    assert cfg["base_model"] == f"consolidated_models/{name}"
    assert not (home / "current_model" / "adapter_model.safetensors").exists(), "a fresh adapter starts"
    backups = [s for s in snapshots.list_snapshots(h) if s["manifest"]["reason"] == "consolidate"]
    assert backups and all(s["pinned"] for s in backups)
    assert (Path(backups[-1]["path"]) / "adapter_model.safetensors").read_bytes() == adapter
    assert (home / "models" / "tiny-qwen3" / "config.json").exists(), "the previous base stays on disk"

    # Training goes on, on the new base; --list shows the lineage.
    train_one(home, "two.jsonl", 2)
    state = json.loads((home / "current_model" / "adapter_state.json").read_text())
    assert state["base_model"] == str(home / "consolidated_models" / name)
    assert [t["file"] for t in state["trained"]] == ["two.jsonl"]
    r = consolidate(home, "--list")
    assert r.returncode == 0 and "first consolidation" in r.stdout and "(current base)" in r.stdout
