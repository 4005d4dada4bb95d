"""Base models as users name them: embedded:<name>, a folder, an adapter folder, a Hugging Face id.

    ./run_tests.sh tests/test_base_model.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, chat_lines, write_jsonl
from trainingd import exit_codes
from trainingd.models.base_model import MAX_LENGTH_CAP, default_max_length, resolve
from trainingd.config import ConfigError, parse_config

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def train_py(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(REPO / "train.py"), *args], cwd=cwd, env=env or OFFLINE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_an_embedded_name_resolves_to_its_folder_under_models_before_it_is_built(tmp_path):
    ref = resolve("embedded:tiny-qwen3", tmp_path)
    assert (ref.kind, ref.path, ref.adapter) == ("embedded", tmp_path / "models" / "tiny-qwen3", None)
    assert ref.display_name == "tiny-qwen3 (embedded)"
    assert resolve("embedded:smollm2-135m", tmp_path).path == tmp_path / "models" / "smollm2-135m"
    with pytest.raises(ConfigError, match="unknown embedded model 'embedded:gpt5'.*embedded:smollm2-135m"):
        resolve("embedded:gpt5", tmp_path)


def test_a_hub_id_offline_and_not_cached_says_how_to_fetch_it_into_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(ConfigError) as e:
        resolve("Qwen/Qwen3-0.6B", tmp_path)
    msg = str(e.value)
    assert "'base_model'" in msg and "hf download Qwen/Qwen3-0.6B --local-dir models/qwen3-0.6b" in msg
    assert 'set base_model to "models/qwen3-0.6b"' in msg


def test_a_hub_id_in_the_cache_resolves_to_its_snapshot_and_names_the_display(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    snap = cache / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"max_position_embeddings": 40960}))
    (cache / "models--Qwen--Qwen3-0.6B" / "refs").mkdir()
    (cache / "models--Qwen--Qwen3-0.6B" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    ref = resolve("Qwen/Qwen3-0.6B", tmp_path)
    assert (ref.kind, ref.path) == ("hub", snap)
    assert parse_config({"base_model": "Qwen/Qwen3-0.6B"}).model_display_name == "Qwen3-0.6B"
    # A model with a 40k context trains at most MAX_LENGTH_CAP tokens per example unless max_length says more.
    assert default_max_length(snap) == MAX_LENGTH_CAP


def test_a_local_folder_wins_over_a_hub_id_of_the_same_spelling(tmp_path, tiny_model):
    (tmp_path / "Qwen").mkdir()
    (tmp_path / "Qwen" / "Qwen3-0.6B").symlink_to(tiny_model)
    ref = resolve("Qwen/Qwen3-0.6B", tmp_path)
    assert (ref.kind, ref.path) == ("folder", tiny_model.resolve())


def test_an_adapter_folder_resolves_to_its_base_and_is_continued(tmp_path, tiny_model):
    adapter = tmp_path / "current_model"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model)}))
    ref = resolve("current_model", tmp_path)
    assert (ref.kind, ref.path, ref.adapter) == ("folder", tiny_model.resolve(), adapter.resolve())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither config.json"):
        resolve("empty", tmp_path)


def test_model_display_name_follows_the_base_unless_set():
    assert parse_config({}).model_display_name == "tiny-qwen3 (embedded)"
    assert parse_config({"base_model": "embedded:smollm2-135m"}).model_display_name == "smollm2-135m (embedded)"
    assert parse_config({"base_model": "embedded:smollm2-135m",
                         "model_display_name": "my model"}).model_display_name == "my model"
    # A config written before the name followed the base still carries the old default: it does not stick.
    assert parse_config({"base_model": "/srv/models/Qwen3-0.6B",
                         "model_display_name": "tiny-qwen3 (embedded)"}).model_display_name == "Qwen3-0.6B"


def test_train_py_takes_an_embedded_name_and_max_length_follows_the_model(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", chat_lines(4))
    r = train_py("--dataset", str(data), "--model", "embedded:tiny-qwen3", "--output-dir", "out",
                 "--batch-size", "2", "--lora-r", "4", cwd=tmp_path)
    assert r.returncode == exit_codes.OK, r.stdout
    assert (tmp_path / "models" / "tiny-qwen3" / "config.json").is_file()  # built under ./models on first use
    state = json.loads((tmp_path / "out" / "adapter_state.json").read_text())
    assert state["locked"]["base_model"] == "embedded:tiny-qwen3"
    # max_length unset: the tiny model's 4096 positions, capped; the data report shows the number used.
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["summary"]["data"]["max_length"] == MAX_LENGTH_CAP


def test_train_py_with_a_hub_id_offline_exits_with_a_config_error_saying_how_to_fetch(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", chat_lines(2))
    env = {**OFFLINE, "HF_HUB_CACHE": str(tmp_path / "hf-cache")}
    r = train_py("--dataset", str(data), "--model", "Qwen/Qwen3-0.6B", "--output-dir", "out", cwd=tmp_path, env=env)
    assert r.returncode == exit_codes.CONFIG_ERROR, r.stdout
    assert "hf download Qwen/Qwen3-0.6B --local-dir models/qwen3-0.6b" in r.stdout
    assert "pass --model models/qwen3-0.6b" in r.stdout
    assert "Traceback" not in r.stdout
