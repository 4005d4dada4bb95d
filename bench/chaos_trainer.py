"""A fast trainer for ``bench/chaos.py``: the real checkpoint and publish code, a hash chain for weights.

It speaks the trainer contract (``trainingd.daemon.trainer_process``): arguments, trainer_command.json, progress, the
result file and named exit codes. Its "adapter" is a hash chain: each optimizer step folds ``job:step`` into the
running hash, so a step applied twice or lost, or a job trained twice, changes the published value, and
``chaos.py`` can compute what an uninterrupted run would have published. Checkpoints go through
``trainingd.train.checkpoint.save_checkpoint`` (every step), the adapter through ``publish_adapter``, so the
real fault points and atomic writes are exercised; only the arithmetic is fake. Steps per job: the first line
of the dataset, ``{"chaos_steps": N}`` (else 3); seconds per step: ``$CHAOS_STEP_S`` (0.03).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from trainingd.contracts.adapter_state import next_state, read_adapter_state, trained_entries
from trainingd.contracts.progress import write_progress
from trainingd.contracts.result import RunResult, write_result
from trainingd.paths import Home
from trainingd.train import checkpoint as ckpt

STEP_S = float(os.environ.get("CHAOS_STEP_S", "0.03"))
DEFAULT_STEPS = 3


def chain(h: str, job_id: str, step: int) -> str:
    return hashlib.sha256(f"{h}|{job_id}:{step}".encode()).hexdigest()


def read_weights(folder: Path) -> str:
    try:
        return json.loads((folder / "adapter_model.safetensors").read_text())["h"]
    except (OSError, ValueError, KeyError):
        return ""


def write_weights(folder: Path, h: str) -> None:
    (folder / "adapter_model.safetensors").write_text(json.dumps({"h": h}))
    (folder / "adapter_config.json").write_text("{}")


def main() -> int:
    p = argparse.ArgumentParser()
    for name in ("--home", "--job-id", "--dataset", "--reason-file", "--parent-pid"):
        p.add_argument(name)
    a = p.parse_args()
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the daemon
    if a.parent_pid and os.getppid() != int(a.parent_pid):
        return 5
    home = Home.at(a.home)
    out, ckpts = home.current_model, home.job_checkpoints(a.job_id)
    first = json.loads(open(a.dataset, encoding="utf-8").readline())
    # A file without chaos_steps (the soak's generated puzzles) takes DEFAULT_STEPS.
    steps = int(first.get("chaos_steps", DEFAULT_STEPS) if isinstance(first, dict) else DEFAULT_STEPS)
    sha = hashlib.sha256(Path(a.dataset).read_bytes()).hexdigest()
    state = read_adapter_state(out)

    def finish(code: int, reason: str = "") -> int:
        write_result(a.reason_file, RunResult(code, reason=reason, summary={"steps": steps}))
        return code

    if any(t.get("job_id") == a.job_id for t in trained_entries(state)):
        print("published before a crash; not trained again", flush=True)
        ckpt.remove_checkpoints(ckpts)
        return finish(0)
    latest = ckpt.latest_complete(ckpts)
    if latest is not None:
        saved = json.loads((latest / "state.json").read_text())
        h, step = saved["h"], saved["step"]
        print(f"resumed from {latest} at step {step}", flush=True)
    else:
        h, step = read_weights(out), 0
    while step < steps:
        try:
            cmd = json.loads(home.trainer_command.read_text())
        except (OSError, ValueError):
            cmd = {}
        if cmd.get("job_id") == a.job_id and cmd.get("action") in ("stop", "skip"):
            return finish(5 if cmd["action"] == "stop" else 6, cmd["action"] + " requested")
        time.sleep(STEP_S)
        step += 1
        h = chain(h, a.job_id, step)

        def files(folder: Path, h: str = h, step: int = step) -> None:
            write_weights(folder, h)
            (folder / "state.json").write_text(json.dumps({"h": h, "step": step}))

        ckpt.save_checkpoint(ckpts, step, write_files=files, manifest={"job_id": a.job_id, "data_sha256": sha},
                             keep=2)
        write_progress(home.trainer_progress, {"job_id": a.job_id, "pid": os.getpid(), "status": "training",
                                               "step": step, "total_steps": steps, "updated_at": time.time()})
    final = ckpt.latest_complete(ckpts)
    entry = {"job_id": a.job_id, "sha256": sha, "file": Path(a.dataset).name, "steps": steps,
             "finished_at": time.time()}
    ckpt.publish_adapter(final, out, next_state(state, entry=entry, base_model="chaos", base_model_hash="chaos",
                                                locked={}, model_name="chaos"))
    ckpt.remove_checkpoints(ckpts)
    return finish(0)


if __name__ == "__main__":
    sys.exit(main())
