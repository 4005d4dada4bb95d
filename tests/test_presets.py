"""Presets: partial configs applied atomically, own adapter folders, refusals; the top-level atomic_ops.py.

Run: .venv/bin/python -m pytest tests/test_presets.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from trainingd.config import load_config
from trainingd.contracts.status import StatusWriter, compose_status
from trainingd.instance import InstanceLock
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def toggle(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / "toggle_preset.sh"), "--home", str(root), *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def adapter(folder: Path, weights: bytes, **locked) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    (folder / "adapter_state.json").write_text(json.dumps({"locked": locked, "generation": 1, "trained": []}))


def test_every_shipped_preset_makes_a_valid_config(tmp_path):
    from trainingd.config import Config, parse_config
    from trainingd.lifecycle.presets import _merge

    presets = sorted((REPO / "presets").glob("*.json"))
    assert {p.stem for p in presets} >= {"small", "full"}
    for p in presets:
        values = json.loads(p.read_text())
        values.pop("adapter_folder", None)
        parse_config(_merge(Config().to_dict(), values))


def test_small_trains_its_own_adapter_and_switching_back_restores_the_main_one(home):
    adapter(home / "current_model", b"main", **{"lora.r": 16})
    r = toggle(home, "small")
    assert r.returncode == 0, r.stderr
    cfg = load_config(home / "config.json")
    assert cfg.lora.r == 8 and cfg.batch_size == 2 and cfg.lora.dropout == 0.0, "objects are merged key by key"
    assert (home / "current_model_shared" / "adapter_model.safetensors").read_bytes() == b"main"
    assert list((home / "current_model").iterdir()) == [], "small starts its own adapter"
    adapter(home / "current_model", b"small", **{"lora.r": 8})
    r = toggle(home, "full")
    assert r.returncode == 0, r.stderr
    assert load_config(home / "config.json").lora.r == 16
    assert (home / "current_model" / "adapter_model.safetensors").read_bytes() == b"main"
    assert (home / "current_model_small" / "adapter_model.safetensors").read_bytes() == b"small"
    r = toggle(home, "--list")
    assert r.returncode == 0 and "* full" in r.stdout


def test_a_preset_changing_a_locked_key_is_refused_and_the_config_kept(home):
    adapter(home / "current_model", b"main", **{"lora.r": 4})
    before = (home / "config.json").read_text()
    r = toggle(home, "full")
    assert r.returncode == 1
    assert "lora.r" in r.stderr and "cannot be approved" in r.stderr
    assert (home / "config.json").read_text() == before
    assert not (home / ".preset.json").exists()
    (home / "presets").mkdir()
    (home / "presets" / "move.json").write_text(json.dumps({"base_model": str(home / "models" / "tiny-qwen3")}))
    adapter(home / "current_model", b"main", base_model="/elsewhere")
    r = toggle(home, "move")
    assert r.returncode == 1 and "--approve" in r.stderr
    r = toggle(home, "move", "--approve")
    assert r.returncode == 0, r.stderr
    assert (home / "logs" / "approvals.jsonl").exists()


def test_a_preset_is_refused_while_a_job_runs_unless_yes(home):
    h = Home.at(home)
    (home / "queue" / "processing" / "000001-a").mkdir(parents=True)
    (home / "presets").mkdir()
    (home / "presets" / "lr.json").write_text(json.dumps({"learning_rate": 0.0005}))
    lock = InstanceLock(h)
    assert lock.acquire(write_pid=False)
    try:
        StatusWriter(h).write(compose_status(daemon={"pid": 0}, status="training", control={"paused": False}))
        r = toggle(home, "lr")
        assert r.returncode == 1 and "a job is being trained" in r.stderr
        r = toggle(home, "lr", "--yes")
        assert r.returncode == 0, r.stderr
        assert load_config(home / "config.json").learning_rate == 0.0005
        r = toggle(home, "small", "--yes")  # its own adapter: never swapped under a running job
        assert r.returncode == 1 and "needs the daemon quiet" in r.stderr
    finally:
        lock.release()


def test_the_top_level_atomic_ops_is_the_package_module(tmp_path):
    code = ("import atomic_ops, trainingd.atomic_ops as m; assert atomic_ops.atomic_write_json is m.atomic_write_json;"
            f"atomic_ops.atomic_write_json({str(tmp_path / 'x.json')!r}, {{'a': 1}})")
    subprocess.run([PY, "-c", code], check=True, cwd=REPO, timeout=60)
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
