"""The README's first command: ./start_all.sh bootstraps, initialises a home and starts the daemon on the embedded
default base model (built locally on first use), which then trains a dropped file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, wait_for


@pytest.mark.slow
def test_start_all_trains_the_sample_on_the_embedded_default_and_stops(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run([str(REPO / "start_all.sh"), "--home", str(home)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        assert json.loads((home / "config.json").read_text())["base_model"] == "embedded:tiny-qwen3"
        shutil.copy(REPO / "examples" / "sample_chat.jsonl", home / "inbox" / "sample_chat.jsonl")
        wait_for(lambda: list((home / "queue" / "done").iterdir()), "the sample to be trained", limit_s=300)
        assert (home / "models" / "tiny-qwen3" / "config.json").exists()
        assert (home / "current_model" / "adapter_model.safetensors").exists()
        again = subprocess.run([str(REPO / "bin" / "launch_training_daemon.sh"), "--home", str(home)],
                               capture_output=True, text=True, timeout=120, env=env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        stop = subprocess.run([sys.executable, str(REPO / "training_controller.py"), "stop", "--home", str(home),
                               "--wait", "--timeout", "120"], capture_output=True, text=True, timeout=180)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert not list((home / "queue" / "failed").iterdir())
