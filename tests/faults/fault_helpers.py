"""Shared parts of the fault tests: a stand-in trainer, homes, daemons run to the end, the invariant check.

The stand-in speaks the trainer's contract (progress file, trainer_command.json, result file, named exit codes)
and publishes like the real one: it adds the job to ``current_model/adapter_state.json`` before exiting 0, and a
job already listed there exits 0 at once (the real trainer's "published before a crash"). What it does comes
from the first line of its dataset, ``{"stand_in": {...}}``:

    steps N          train N fake steps (0.02 s each), then publish and exit 0 (default 3)
    exit CODE        exit CODE at once (after printing ``print``), writing a result file
    once PATH        the spec's ``exit``/``kill_parent``/``signal`` apply only while PATH does not exist (created then)
    kill_parent      SIGKILL the daemon, then itself (a trainer that takes its daemon down)
    signal N         die of signal N (11: a segfault, 9: the OOM killer)
    kill_after_publish  leave a checkpoint, publish, then SIGKILL the daemon and itself
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DAEMON = [sys.executable, str(REPO / "training_daemon.py")]

STAND_IN = r'''
import argparse, hashlib, json, os, signal, sys, time
from pathlib import Path
from trainingd.contracts.adapter_state import next_state, read_adapter_state, write_adapter_state, trained_entries
p = argparse.ArgumentParser()
for name in ("--home", "--job-id", "--dataset", "--reason-file", "--parent-pid"):
    p.add_argument(name)
a = p.parse_args()
spec = json.loads(open(a.dataset, encoding="utf-8").readline())["stand_in"]
home = Path(a.home)
model = home / "current_model"

def write(path, obj):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)

def finish(code, name, reason="", details=()):
    write(a.reason_file, {"exit": name, "reason": reason, "details": list(details), "summary": {"steps": 1}})
    sys.exit(code)

print("stand-in trainer started for", a.job_id, flush=True)
state = read_adapter_state(model)
if any(t.get("job_id") == a.job_id for t in trained_entries(state)):
    finish(0, "ok")
first = "once" not in spec or not os.path.exists(spec["once"])
if "once" in spec and first:
    open(spec["once"], "w").close()
if first and spec.get("kill_parent"):
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
if first and spec.get("signal"):
    os.kill(os.getpid(), spec["signal"])
if first and "exit" in spec:
    print(spec.get("print", ""), flush=True)
    finish(spec["exit"], spec.get("name", "x"), spec.get("reason", ""), spec.get("details", []))
if spec.get("kill_after_publish"):
    (model / "checkpoints" / a.job_id / "step-000001").mkdir(parents=True, exist_ok=True)
    (model / "checkpoints" / a.job_id / "step-000001" / "COMPLETE").write_text("1\n")
for step in range(1, spec.get("steps", 3) + 1):
    try:
        cmd = json.load(open(home / "control" / "trainer_command.json"))
    except (OSError, ValueError):
        cmd = {}
    if cmd.get("job_id") == a.job_id and cmd.get("action") in ("stop", "skip"):
        finish(5 if cmd["action"] == "stop" else 6, cmd["action"] + "ped")
    write(home / "status" / "trainer_progress.json", {"job_id": a.job_id, "pid": os.getpid(), "status": "training",
          "step": step, "total_steps": spec.get("steps", 3), "updated_at": time.time()})
    time.sleep(0.02)
sha = hashlib.sha256(open(a.dataset, "rb").read()).hexdigest()
model.mkdir(exist_ok=True)
write_adapter_state(model, next_state(state, entry={"job_id": a.job_id, "sha256": sha,
                    "file": os.path.basename(a.dataset), "steps": 1, "finished_at": time.time()},
                    base_model="stand-in", base_model_hash="stand-in", locked={}, model_name="stand-in"))
if first and spec.get("kill_after_publish"):  # published, its checkpoints not yet removed
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
finish(0, "ok")
'''


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
    script = tmp_path / "stand_in_trainer.py"
    script.write_text(STAND_IN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAININGD_")}
    env.update({"TRAININGD_TRAINER": str(script), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)})
    return root, env


def drop(root: Path, name: str, spec: dict | None = None, lines: list | None = None) -> None:
    """Drop a file into the inbox as producers should: a hidden temp file, then a rename."""
    records = ([{"stand_in": spec}] if spec is not None else []) + (lines or [])
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
