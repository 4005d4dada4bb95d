"""Shared parts of the fault tests: a stand-in trainer, homes, daemons run to the end, the invariant check.

The stand-in is ``tests/tools/stand_in_trainer.py`` (its docstring lists what a dataset's first line
``{"stand_in": {...}}`` can ask of it). Here it publishes like the real trainer unless a spec says otherwise: three
quick steps, then the job added to ``current_model/adapter_state.json`` before exiting 0; a job already listed there
exits 0 at once (the real trainer's "published before a crash").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAEMON = [sys.executable, str(REPO / "training_daemon.py")]

STAND_IN = REPO / "tests" / "tools" / "stand_in_trainer.py"
# What the fault tests' stand-in does unless a spec says otherwise: three quick steps, then publish.
STAND_IN_DEFAULTS = {"steps": 3, "step_s": 0.02, "publish": True}


def write_config(root: Path, **overrides) -> None:
    path = root / "config.json"
    cfg = json.loads(path.read_text()) if path.exists() else {}
    cfg.update(overrides)
    path.write_text(json.dumps(cfg, indent=2))


def stand_in_home(tmp_path: Path, **config) -> tuple[Path, dict]:
    """A home with no model whose trainer is the stand-in; returns (root, environment for its daemons)."""
    root = tmp_path / "home"
    root.mkdir()
    write_config(root, **{"max_attempts": 3, "stop_grace_s": 20.0, "stable_seconds": 0.2, **config})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAININGD_")}
    env.update({"TRAININGD_TRAINER": str(STAND_IN), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    return root, env


def drop(root: Path, name: str, spec: dict | None = None, lines: list | None = None) -> None:
    """Drop a file into the inbox as producers should: a hidden temp file, then a rename."""
    records = ([{"stand_in": {**STAND_IN_DEFAULTS, **spec}}] if spec is not None else []) + (lines or [])
    tmp = root / "inbox" / f".{name}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tmp.rename(root / "inbox" / name)


def run_daemon(root: Path, env: dict, *extra: str, faults: dict | None = None,
               limit_s: float = 300) -> subprocess.CompletedProcess:
    """``training_daemon.py --home root --once`` to its end; ``faults`` adds TRAININGD_CRASH_AT/FAIL_AT."""
    return subprocess.run([*DAEMON, "--home", str(root), "--once", *extra], capture_output=True, text=True,
                          env={**env, **(faults or {})}, timeout=limit_s, cwd=REPO)


def daemon_log(root: Path) -> str:
    # logs/daemon.log is a link to today's daemon_YYYYMMDD.log: read each file once
    return "".join(p.read_text(errors="replace") for p in sorted((root / "logs").glob("daemon*.log"))
                   if not p.is_symlink())


def job_metas(root: Path, state: str) -> list[dict]:
    folder = root / "queue" / state
    return [json.loads((d / "job.json").read_text()) for d in sorted(folder.iterdir()) if (d / "job.json").exists()]
