"""A stand-in trainer: a real process that speaks the trainer's contract, for the daemon's tests and ``bench/chaos.py``.

The daemon starts it through ``TRAININGD_TRAINER=tests/tools/stand_in_trainer.py`` exactly as it starts the real
trainer (``--home --job-id --dataset --reason-file --parent-pid``). It reads ``control/trainer_command.json``, writes
``status/trainer_progress.json`` and the result file, and exits with the named codes of
``trainingd.exit_codes.TrainerExit``; every path comes from ``trainingd.paths.Home`` and the contracts. Only the
arithmetic is fake. What it does comes from the first line of its dataset, ``{"stand_in": {...}}`` (else from the
JSON in ``$TRAININGD_STAND_IN``):

    steps N           optimizer steps before it ends ok (default: none, it runs until told to stop or skip)
    step_s S          seconds per step (default 0.05); start_delay S: seconds before the first progress
    exit CODE         exit CODE at once (after printing ``print``), with ``reason`` and ``details`` in the result
    once PATH         ``exit``/``kill_parent``/``signal``/``kill_after_publish`` apply only while PATH does not exist
    kill_parent       SIGKILL the daemon, then itself (a trainer that takes its daemon down)
    signal N          die of signal N (11: a segfault, 9: the OOM killer)
    ignore_stop, ignore_skip   go on training when asked to stop or skip; on_skip_exit CODE: exit CODE instead
    publish           on success add the job to current_model/adapter_state.json (a job already listed there exits
                      0 at once: "published before a crash"); with ``checkpoints`` also the adapter files
    checkpoints       a hash chain for weights: each step folds ``job:step`` into it, checkpointed every step through
                      ``trainingd.contracts.checkpoint`` (resumed from the latest), published with ``publish_adapter``,
                      so a step applied twice or lost, or a job trained twice, changes the published value
    kill_after_publish  leave a checkpoint, publish, then SIGKILL the daemon and itself
    die_with_parent   exit when the daemon dies (PR_SET_PDEATHSIG), and at once when started by another process

Its progress carries a NaN loss and an infinite EMA on purpose: a trainer's float bug the daemon must not copy
into the status file.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from trainingd.atomic_ops import atomic_write_bytes  # noqa: E402 - imported once sys.path holds the repository
from trainingd.contracts import checkpoint as ckpt  # noqa: E402
from trainingd.contracts.adapter_state import next_state, read_adapter_state, trained_entries  # noqa: E402
from trainingd.contracts.adapter_state import write_adapter_state  # noqa: E402
from trainingd.contracts.result import RunResult, write_result  # noqa: E402
from trainingd.contracts.trainer_command import read_trainer_command  # noqa: E402
from trainingd.exit_codes import TrainerExit  # noqa: E402
from trainingd.paths import Home  # noqa: E402

WEIGHTS = "adapter_model.safetensors"


def chain(h: str, job_id: str, step: int) -> str:
    """The stand-in's weights after one more step of ``job_id``."""
    return hashlib.sha256(f"{h}|{job_id}:{step}".encode()).hexdigest()


def read_weights(folder: Path) -> str:
    try:
        return json.loads((Path(folder) / WEIGHTS).read_text())["h"]
    except (OSError, ValueError, KeyError):
        return ""


def _write_weights(folder: Path, h: str) -> None:
    (folder / WEIGHTS).write_text(json.dumps({"h": h}))
    (folder / "adapter_config.json").write_text("{}")


def _kill_both() -> None:
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


DEFAULT_ENV = "TRAININGD_STAND_IN"


class StandIn:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.home = Home.at(a.home)
        # A dataset without a "stand_in" line (the soak's generated puzzles) takes $TRAININGD_STAND_IN's options.
        self.spec: dict = json.loads(os.environ.get(DEFAULT_ENV) or "{}")
        with open(a.dataset, encoding="utf-8") as f:
            first = json.loads(f.readline())
        if isinstance(first, dict) and isinstance(first.get("stand_in"), dict):
            self.spec = first["stand_in"]
        self.step = 0

    def finish(self, code: TrainerExit | int, reason: str = "", summary: dict | None = None) -> int:
        write_result(self.a.reason_file, RunResult(int(code), reason=reason, details=self.spec.get("details", []),
                                                   summary=summary or {"steps": self.step}))
        return int(code)

    def progress(self, status: str) -> None:
        step = self.step
        doc = {"job_id": self.a.job_id, "pid": os.getpid(), "status": status, "status_detail": None, "epoch": 0,
               "step": step, "total_steps": 1000, "progress": step / 1000,
               "examples_done": step, "tokens_seen": 10 * step, "loss": float("nan"), "loss_ema": float("inf"),
               "learning_rate": 1e-3, "grad_norm": None, "eval_loss": None, "tokens_per_s": 5.0,
               "seconds_per_step": 0.05, "eta_seconds": None,
               "prepare": {"phase": "tokenize", "lines_done": 3, "lines_total": 3}, "data": None,
               "layer_activity_summary": {"step": step, "modules": 1, "top": [{"name": "model.layers.0.mlp.up_proj"}]},
               "updated_at": time.time()}
        atomic_write_bytes(self.home.trainer_progress, json.dumps(doc).encode(), durable=False)

    def action(self) -> str:
        cmd = read_trainer_command(self.home)
        return cmd.action if cmd is not None and cmd.job_id == self.a.job_id else "run"

    def run(self) -> int:
        spec, a, home = self.spec, self.a, self.home
        if spec.get("die_with_parent"):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: never outlive the daemon
            if a.parent_pid and os.getppid() != int(a.parent_pid):
                return int(TrainerExit.STOPPED)
        print("stand-in trainer started for", a.job_id, flush=True)
        state = read_adapter_state(home.current_model)
        ckpts = home.job_checkpoints(a.job_id)
        if spec.get("publish") and any(t.get("job_id") == a.job_id for t in trained_entries(state, home.current_model)):
            print("published before a crash; not trained again", flush=True)
            if spec.get("checkpoints"):
                ckpt.remove_checkpoints(ckpts)
            return self.finish(TrainerExit.OK)
        first = "once" not in spec or not os.path.exists(spec["once"])
        if "once" in spec and first:
            open(spec["once"], "w").close()
        if first and spec.get("kill_parent"):
            _kill_both()
        if first and spec.get("signal"):
            os.kill(os.getpid(), spec["signal"])
        if first and "exit" in spec:
            print(spec.get("print", ""), flush=True)
            self.step = 1
            return self.finish(spec["exit"], spec.get("reason", ""))
        time.sleep(spec.get("start_delay", 0))  # a trainer still loading: no progress file yet
        h = read_weights(home.current_model)
        latest = ckpt.latest_complete(ckpts) if spec.get("checkpoints") else None
        if latest is not None:
            saved = json.loads((latest / ckpt.STATE).read_text())
            h, self.step = saved["h"], saved["step"]
            print(f"resumed from {latest} at step {self.step}", flush=True)
        while spec.get("steps") is None or self.step < spec["steps"]:
            act = self.action()
            if act == "stop" and not spec.get("ignore_stop"):
                return self.finish(TrainerExit.STOPPED, "stop requested")
            if act == "skip" and "on_skip_exit" in spec:  # ended (stopped, crashed) before honouring the skip
                return self.finish(spec["on_skip_exit"], "ended before the skip")
            if act == "skip" and not spec.get("ignore_skip"):
                return self.finish(TrainerExit.SKIPPED, "skip requested")
            if act == "pause":
                self.progress("paused")
            else:
                self.step += 1
                h = chain(h, a.job_id, self.step)
                if spec.get("checkpoints"):
                    self._checkpoint(ckpts, h)
                self.progress("training")
            time.sleep(spec.get("step_s", 0.05))
        if spec.get("publish"):
            self._publish(state, h, ckpts, first)
        return self.finish(TrainerExit.OK, summary={"steps": self.step, "loss": 1.5, "tokens_seen": 10 * self.step})

    def _checkpoint(self, ckpts: Path, h: str) -> None:
        step = self.step

        def files(folder: Path) -> None:
            _write_weights(folder, h)
            (folder / ckpt.STATE).write_text(json.dumps({"h": h, "step": step}))

        sha = hashlib.sha256(Path(self.a.dataset).read_bytes()).hexdigest()
        ckpt.save_checkpoint(ckpts, step, write_files=files, manifest={"job_id": self.a.job_id, "data_sha256": sha},
                             keep=2)

    def _publish(self, state: dict | None, h: str, ckpts: Path, first: bool) -> None:
        spec, a, home = self.spec, self.a, self.home
        sha = hashlib.sha256(Path(a.dataset).read_bytes()).hexdigest()
        entry = {"job_id": a.job_id, "sha256": sha, "file": Path(a.dataset).name, "steps": self.step,
                 "finished_at": time.time()}
        new = next_state(state, entry=entry, base_model="stand-in", base_model_hash="stand-in", locked={},
                         model_name="stand-in")
        if spec.get("kill_after_publish"):
            marker = ckpts / ckpt.step_dir_name(1)
            marker.mkdir(parents=True, exist_ok=True)
            (marker / ckpt.COMPLETE).write_text("1\n")
        if spec.get("checkpoints"):
            ckpt.publish_adapter(ckpt.latest_complete(ckpts), home.current_model, new)
        else:
            home.current_model.mkdir(parents=True, exist_ok=True)
            write_adapter_state(home.current_model, new)
        if first and spec.get("kill_after_publish"):  # published, its checkpoints not yet removed
            _kill_both()
        if spec.get("checkpoints"):  # otherwise the daemon removes them (its own fault point)
            ckpt.remove_checkpoints(ckpts)


def main() -> int:
    p = argparse.ArgumentParser(description="the stand-in trainer (tests, bench/chaos.py)")
    for name in ("--home", "--job-id", "--dataset", "--reason-file", "--parent-pid"):
        p.add_argument(name)
    return StandIn(p.parse_args()).run()


if __name__ == "__main__":
    sys.exit(main())
