"""Every shipped config parses; bad configs are refused with the key named (config_validator.py).

    .venv/bin/python -m pytest tests/test_config.py -x -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainingd.cli.main import validator_main
from trainingd.config import (LOCKABLE_KEYS, Config, ConfigError, default_config_json, load_config, parse_config,
                              unenforced_locked_keys)

REPO = Path(__file__).resolve().parent.parent


def shipped_configs() -> list[Path]:
    found = [REPO / "config.json"] if (REPO / "config.json").exists() else []
    return found + sorted((REPO / "configs").glob("*.json")) + sorted((REPO / "examples").glob("*config*.json"))


def test_the_default_config_round_trips():
    assert parse_config(json.loads(default_config_json())) == Config()


@pytest.mark.parametrize("path", shipped_configs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # The shipped configs set every key users know, so a renamed field cannot hide behind a default.
    assert set(json.loads(path.read_text())) >= {"base_model", "batch_size", "learning_rate", "lora"}


def test_the_repository_ships_a_config():
    assert shipped_configs(), "config.json at the repository root is the quick start's config"


def _validate(tmp_path: Path, capsys, cfg: dict | str, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "config.json"
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    code = validator_main([str(path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A folder that looks like a model to the validator (it checks for config.json, not the weights)."""
    d = tmp_path / "models" / "base"
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    return d


def test_validator_says_ok_for_a_good_config(tmp_path, capsys, model_dir):
    code, out, _ = _validate(tmp_path, capsys, {"base_model": "models/base", "batch_size": 2})
    assert code == 0
    assert out.startswith("ok")


@pytest.mark.parametrize("cfg, named", [
    ({"bach_size": 2}, ["'bach_size'", "did you mean 'batch_size'"]),
    ({"lora": {"rank": 8}}, ["'lora.rank'"]),
    ({"colour": "blue"}, ["unknown config key 'colour'"]),
    ({"batch_size": "4"}, ["'batch_size'", "int"]),
    ({"use_qlora": "yes"}, ["'use_qlora'", "bool"]),
    ({"lora": {"r": 0}}, ["'lora.r'"]),
    ({"lr_scheduler": "exponential"}, ["'lr_scheduler'", "cosine"]),
    ({"base_model": "models/nowhere"}, ["'base_model'", "nowhere"]),
    ({"distributed": {"strategy": "fsdp"}, "use_qlora": True}, ["'distributed.strategy'", "use_qlora", "'ddp'"]),
    ({"distributed": {"num_processes": 4, "num_machines": 2}}, ["'distributed.main_process_ip'", "config_file"]),
    ({"distributed": {"num_processes": 3, "num_machines": 2}}, ["'distributed.num_machines'", "divide"]),
    ({"distributed": {"join_timeout_s": 0}}, ["'distributed.join_timeout_s'", "at least 1"]),
])
def test_validator_refuses_bad_configs_naming_the_key(tmp_path, capsys, cfg, named):
    code, out, err = _validate(tmp_path, capsys, cfg)
    assert code == 3
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    for text in named:
        assert text in err, (text, err)


def test_validator_refuses_invalid_json_with_its_position(tmp_path, capsys):
    code, _, err = _validate(tmp_path, capsys, '{"batch_size": 2,,}')
    assert code == 3 and "line 1" in err


def test_validator_json_output(tmp_path, capsys):
    code, out, _ = _validate(tmp_path, capsys, {"batch_size": -1}, "--json")
    result = json.loads(out)
    assert code == 3 and result["ok"] is False and "'batch_size'" in result["error"]


def test_validator_missing_file_is_a_config_error(tmp_path, capsys):
    assert validator_main([str(tmp_path / "absent.json")]) == 3
    assert "no such file" in capsys.readouterr().err


def test_validator_checks_a_home_and_accepts_a_missing_config_as_defaults(tmp_path, capsys):
    assert validator_main(["--home", str(tmp_path)]) == 0
    assert "defaults" in capsys.readouterr().out
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 0}))
    assert validator_main(["--home", str(tmp_path)]) == 3
    assert "'epochs'" in capsys.readouterr().err


def test_validator_script_runs_from_the_shell(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"learning_rat": 0.1}))
    r = subprocess.run([sys.executable, str(REPO / "config_validator.py"), str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3
    assert "did you mean 'learning_rate'" in r.stderr
    r = subprocess.run([sys.executable, str(REPO / "config_validator.py"), "--home", str(REPO)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_load_config_error_is_a_config_error(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"max_length": 1.5}))
    with pytest.raises(ConfigError, match="max_length"):
        load_config(tmp_path / "c.json")


def test_the_shipped_config_locks_only_what_is_enforced():
    cfg = load_config(REPO / "config.json")
    assert unenforced_locked_keys(cfg) == []
    assert sorted(cfg.locked_values()) == sorted(LOCKABLE_KEYS)


def test_validator_warns_about_a_listed_key_that_is_not_locked(tmp_path, capsys, model_dir):
    cfg = {"base_model": "models/base", "locked_keys": ["base_model", "use_qlora", "lora", "max_length"]}
    code, out, err = _validate(tmp_path, capsys, cfg)
    assert code == 0 and out.startswith("ok"), err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, out
    assert "'use_qlora'" in warnings[0] and "not enforced" in warnings[0] and "lora.target_modules" in warnings[0]
    assert "'max_length'" in warnings[1]
    code, out, _ = _validate(tmp_path, capsys, cfg, "--json")
    assert code == 0 and len(json.loads(out)["warnings"]) == 2


def test_validator_of_a_home_warns_about_an_unenforced_locked_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"locked_keys": ["base_model", "train_on"]}))
    r = subprocess.run([sys.executable, str(REPO / "config_validator.py"), "--home", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "warning: locked_keys lists 'train_on'" in r.stdout
