"""Every file and folder name of a home, in one place.

A home is the working directory of one daemon: ``--home DIR`` > ``$TRAININGD_HOME`` > the current
directory. Nothing else in the package spells a path of a home by hand: a module that needs one adds a property
here (names inside a job folder or a checkpoint are the contracts', ``trainingd.contracts``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PRIORITIES = ("high", "normal", "low")
JOB_STATES = ("pending", "processing", "done", "failed")


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """Return the home folder: the argument, else ``$TRAININGD_HOME``, else the current directory."""
    if home is None:
        home = os.environ.get("TRAININGD_HOME") or os.getcwd()
    return Path(home).expanduser().resolve()


@dataclass(frozen=True)
class Home:
    """The layout of one home folder."""

    root: Path

    @classmethod
    def at(cls, home: str | os.PathLike | None = None) -> "Home":
        return cls(resolve_home(home))

    # configuration and single-instance guard
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def lock(self) -> Path:
        return self.root / ".daemon.lock"

    @property
    def pid(self) -> Path:
        return self.root / ".daemon.pid"

    @property
    def monitor_lock(self) -> Path:
        """The monitor's own flock: at most one monitor per home (see ``trainingd.monitor.lifecycle``)."""
        return self.root / ".monitor.lock"

    @property
    def monitor_pid(self) -> Path:
        """Written once the monitor holds its lock and listens on its port."""
        return self.root / ".monitor.pid"

    @property
    def trainer_record(self) -> Path:
        """The running trainer's pid and process group, written at spawn (see ``trainer_process``)."""
        return self.root / ".trainer.json"

    @property
    def room_probe(self) -> Path:
        """The stem of the files written and removed again to see whether a full disk has room
        (``lifecycle.home_guard.has_room``: ``.room-probe-XXXXXXXX.tmp``)."""
        return self.root / ".room-probe"

    @property
    def emergency_stop(self) -> Path:
        return self.root / ".stop"

    # intake and queue
    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def queue(self) -> Path:
        return self.root / "queue"

    def pending(self, priority: str) -> Path:
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
        return self.pending_root / priority

    @property
    def pending_root(self) -> Path:
        """The folder of the three ``pending/<priority>/`` queues."""
        return self.queue / "pending"

    @property
    def processing(self) -> Path:
        return self.queue / "processing"

    @property
    def done(self) -> Path:
        return self.queue / "done"

    @property
    def failed(self) -> Path:
        return self.queue / "failed"

    @property
    def job_counter(self) -> Path:
        """Monotonic job counter: job ids are never reused, even after their folders are removed."""
        return self.queue / ".next_job_number"

    @property
    def hashes(self) -> Path:
        """Append-only record of every accepted file's sha256 and job id (``trainingd.contracts.hashes``)."""
        return self.queue / "hashes.jsonl"

    @property
    def incoming(self) -> Path:
        """Where a new job is assembled before one rename publishes it into ``pending/``."""
        return self.queue / ".incoming"

    @property
    def queue_lock(self) -> Path:
        """The flock that serialises moves of job folders (``trainingd.jobqueue``)."""
        return self.queue / ".lock"

    @property
    def incoming_lock(self) -> Path:
        """Shared while a job is being added, exclusive while leftovers of ``.incoming/`` are swept."""
        return self.queue / ".incoming.lock"

    # status and logs
    @property
    def status_dir(self) -> Path:
        return self.root / "status"

    @property
    def status(self) -> Path:
        return self.status_dir / "training_status.json"

    @property
    def trainer_progress(self) -> Path:
        """Written by the trainer (atomically), merged into the status file by the daemon."""
        return self.status_dir / "trainer_progress.json"

    @property
    def layer_activity(self) -> Path:
        """Per-LoRA-module update and gradient norms, rewritten by the trainer (``contracts.layer_activity``)."""
        return self.status_dir / "layer_activity.json"

    @property
    def layer_history(self) -> Path:
        """The last reports of ``layer_activity``, across jobs, bounded (``contracts.layer_history``)."""
        return self.status_dir / "layer_history.jsonl"

    @property
    def metrics(self) -> Path:
        return self.status_dir / "metrics.jsonl"

    @property
    def history(self) -> Path:
        return self.status_dir / "history.jsonl"

    @property
    def eval_result(self) -> Path:
        """The latest held-out evaluation (``trainingd.contracts.eval_result``)."""
        return self.status_dir / "eval_result.json"

    def eval_set_cache(self, seed: int, level: int, count: int) -> Path:
        """The held-out set fetched from the generator, kept so every evaluation uses the same one. The name carries
        the generator's vocabulary: a set cached from the old 152-word list may hold words the new list trains on."""
        return self.status_dir / f"eval_set_level{level}_seed{seed}_count{count}_wordfreq8k.jsonl"

    @property
    def autogen_state(self) -> Path:
        """What the daemon last asked the generator for (``trainingd.contracts.autogen_state``)."""
        return self.status_dir / "autogen_state.json"

    @property
    def autogen_dir(self) -> Path:
        """Where generated files are written before they are renamed into ``inbox/``."""
        return self.root / ".autogen"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, one run folder per job, when the config asks for them."""
        return self.logs / "tensorboard"

    @property
    def training_log(self) -> Path:
        return self.logs / "training_output.log"

    def node_training_log(self, machine_rank: int) -> Path:
        """The output of the trainer processes that ``trainingd node`` starts on machine ``machine_rank``."""
        return self.logs / f"training_output.node{machine_rank}.log"

    @property
    def eval_log(self) -> Path:
        """The evaluator's output (``python -m trainingd.train.evaluate``)."""
        return self.logs / "eval_output.log"

    @property
    def approvals_log(self) -> Path:
        """Append-only record of accepted locked-key changes (``trainingd.contracts.approvals``)."""
        return self.logs / "approvals.jsonl"

    @property
    def daemon_log(self) -> Path:
        """A link to today's daemon log ``daemon_YYYYMMDD.log`` (UTC), earlier days beside it (``trainingd.logs``)."""
        return self.logs / "daemon.log"

    # control
    @property
    def control(self) -> Path:
        return self.root / "control"

    @property
    def control_requests(self) -> Path:
        return self.control / "requests"

    @property
    def monitor_token(self) -> Path:
        """The secret the monitor's control calls need (mode 0600, made by the monitor on start)."""
        return self.control / "monitor_token"

    @property
    def trainer_command(self) -> Path:
        """The daemon's standing order to the running trainer (see ``trainingd.contracts.trainer_command``)."""
        return self.control / "trainer_command.json"

    # models
    @property
    def current_model(self) -> Path:
        """The live adapter (adapter_config.json, adapter_model.safetensors, adapter_state.json)."""
        return self.root / "current_model"

    @property
    def checkpoints(self) -> Path:
        return self.current_model / "checkpoints"

    def job_checkpoints(self, job_id: str) -> Path:
        return self.checkpoints / job_id

    @property
    def cache(self) -> Path:
        """Tokenized-data cache (datasets Arrow files), keyed by file hash, tokenizer, template and settings."""
        return self.root / "cache"

    @property
    def presets(self) -> Path:
        """A home's own presets (beside the repository's ``presets/``)."""
        return self.root / "presets"

    @property
    def snapshots(self) -> Path:
        return self.root / "snapshots"

    @property
    def consolidated_models(self) -> Path:
        return self.root / "consolidated_models"

    @property
    def models(self) -> Path:
        """Where the embedded default base model is built on first use."""
        return self.root / "models"

    def runtime_dirs(self) -> list[Path]:
        """Folders a home needs; created by ``trainingd init`` and on daemon start."""
        return [
            self.inbox,
            *(self.pending(p) for p in PRIORITIES),
            self.processing,
            self.done,
            self.failed,
            self.status_dir,
            self.logs,
            self.control_requests,
            self.current_model,
            self.models,
        ]
