"""``status/training_status.json``: the schema and its writer, stdlib only. The one thing the CLI and the monitor read.

``status/training_status.json`` (schema_version 1) is written only by the daemon (``StatusWriter``,
``atomic_ops.atomic_write_json``), every tick; read by ``training_controller.py status`` and ``--wait``
(``read_status``) and by the monitor. The fields are in ARCHITECTURE.md ("Status file") and built by
``compose_status``; the trainer's part comes from ``contracts.progress``.
``seq`` increases strictly, also across daemon restarts (the writer continues from the file's last seq).
Units are in the names, unknown values are ``null``, never NaN. Beside the schema's fields the daemon adds
``faults`` (one ``{"subsystem", "message", "path", "fix", "since"}`` per part of its tick that fails on every
tick: ``trainingd.daemon.containment``) and ``liveness`` (``{"head", "head_since", "stalled", "stall_after_s",
"problem", "fix"}``: whether the head of the queue has sat unmoved while idle). Finished jobs are appended to
``status/history.jsonl``. Read it from the shell::

    python3 -c "from trainingd.contracts.status import read_status; import json; print(json.dumps(read_status('.'), indent=2))"
"""  # noqa: E501 - the shell line above is copied whole

from __future__ import annotations

import json
import logging
import os
from typing import Any

from trainingd.atomic_ops import append_jsonl, atomic_write_json, json_safe, read_json, read_jsonl
from trainingd.paths import PRIORITIES, Home
from trainingd.contracts.job import now_iso
from trainingd.contracts.progress import BATCH_FIELDS, JOB_FIELDS, METRIC_FIELDS, PREPARE_FIELDS, ProgressDoc

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
STATUSES = ("idle", "loading", "training", "evaluating", "saving", "paused", "stopping", "stopped", "error")
MAX_ACKS = 20

# The trainer's progress states, as the daemon-level status enum shows them.
_TRAINER_TO_STATUS = {
    "loading": "loading",
    "preparing": "loading",
    "training": "training",
    "evaluating": "evaluating",
    "saving": "saving",
    "paused": "paused",
    "stopping": "stopping",
}

# What the daemon knows of the running job; the rest of ``job`` comes from the trainer's progress.
DAEMON_JOB_KEYS = ("id", "file", "sha256", "priority", "started_at")
JOB_KEYS = DAEMON_JOB_KEYS + JOB_FIELDS
# What the trainer's data preparation found, shown so that no example is dropped in silence.
DATA_KEYS = ("format", "examples", "kept", "dropped_too_long", "truncated", "no_trained_tokens", "max_length")


def data_counts(report: Any) -> dict | None:
    """The counts of a data report (the trainer's progress ``data`` or a result's ``summary.data``)."""
    return {k: report.get(k) for k in DATA_KEYS} if isinstance(report, dict) else None


def _home(home: Home | str | os.PathLike) -> Home:
    return home if isinstance(home, Home) else Home.at(home)


def load_status(home: Home | str | os.PathLike) -> dict:
    """The current status document for a checker that reports why it is unusable: raises FileNotFoundError when
    none was written, ValueError when it is not a JSON object (NaN included), OSError when it cannot be read."""
    path = _home(home).status
    data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return data


def _refuse_constant(token: str):
    raise ValueError(f"{token} is not JSON")


def read_status(home: Home | str | os.PathLike) -> dict | None:
    """The current status document; None when no daemon has written one yet or it cannot be parsed."""
    path = _home(home).status
    try:
        data = read_json(path, None)
    except (ValueError, OSError) as e:  # a torn file cannot happen (atomic writes), a hand-edited one can
        log.warning("cannot read %s: %s", path, e)
        return None
    return data if isinstance(data, dict) else None


def empty_control() -> dict:
    return {"paused": False, "stopping": False, "last_request": None, "last_ack": None, "acks": []}


def compose_status(*, daemon: dict, status: str, status_detail: str | None = None, job: dict | None = None,
                   progress: ProgressDoc | None = None, queue: dict | None = None, model: dict | None = None,
                   control: dict | None = None, last_error: dict | None = None) -> dict:
    """Build a schema-1 status document (without seq/updated_at, which the writer adds).

    ``job`` holds what the daemon knows of the running job (id, file, sha256, priority, started_at);
    ``progress`` is the trainer's progress file for that job, merged in for steps, metrics and prepare.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}")
    progress = progress or {}
    job_doc = None
    if job is not None:
        job_doc = {k: job.get(k) for k in DAEMON_JOB_KEYS}
        for k in JOB_FIELDS:
            job_doc[k] = progress.get(k)
        job_doc["data"] = data_counts(progress.get("data"))
        job_doc["notice"] = progress.get("notice")  # e.g. a checkpoint refused because the adapter moved on
        job_doc["batch"] = {k: progress.get(k) for k in BATCH_FIELDS}  # e.g. a smaller micro-batch after an OOM
        job_doc["precision"] = progress.get("precision")  # fp32 | bf16: what the frozen base trains in
    metrics = {k: progress.get(k) for k in METRIC_FIELDS}
    prep = progress.get("prepare")
    prepare = {k: prep.get(k) for k in PREPARE_FIELDS} if isinstance(prep, dict) else None
    q = queue or {"pending": {p: 0 for p in PRIORITIES}, "processing": 0, "done": 0, "failed": 0}
    model = model or {"base": None, "adapter": None, "model_display_name": None}
    doc = {
        "schema_version": SCHEMA_VERSION,
        "seq": 0,
        "updated_at": None,
        "daemon": daemon,
        "status": status,
        "status_detail": status_detail,
        "job": job_doc,
        "metrics": metrics,
        "prepare": prepare,
        "queue": q,
        "model": model,
        "control": control or empty_control(),
        "last_error": last_error,
        # the LoRA modules that changed most at the trainer's last layer report (contracts.layer_activity)
        "layer_activity_summary": progress.get("layer_activity_summary") if job_doc else None,
        # flat fields that older readers use
        "current_step": job_doc["step"] if job_doc else None,
        "total_steps": job_doc["total_steps"] if job_doc else None,
        "loss": metrics["loss"],
        "current_file": job_doc["file"] if job_doc else None,
        "model_display_name": model.get("model_display_name"),
    }
    return json_safe(doc)


def status_from_trainer(progress: ProgressDoc | None) -> tuple[str, str | None]:
    """The daemon-level status and detail while a trainer runs (``loading`` until it reports)."""
    if not progress:
        return "loading", "starting the trainer"
    state = _TRAINER_TO_STATUS.get(str(progress.get("status")), "training")
    detail = progress.get("status_detail")
    if progress.get("status") == "preparing" and not detail:
        detail = "preparing data"
    return state, detail


class StatusWriter:
    """Writes the status file with a strictly increasing ``seq`` that continues across restarts."""

    def __init__(self, home: Home):
        self.home = home
        previous = read_status(home) or {}
        seq = previous.get("seq")
        self.seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
        self.previous = previous

    def write(self, doc: dict, *, durable: bool = False) -> dict:
        self.seq += 1
        doc = json_safe({**doc, "seq": self.seq, "updated_at": now_iso()})
        atomic_write_json(self.home.status, doc, durable=durable, point="status")
        return doc


def append_history(home: Home, *, job_id: str, file: str | None, state: str, result: str | None,
                   reason: str | None = None, summary: dict | None = None, seconds: float | None = None) -> dict:
    """One line per finished job in ``status/history.jsonl``."""
    s = summary or {}

    def first(*keys: str) -> Any:
        for k in keys:
            if s.get(k) is not None:
                return s[k]
        return None

    data = data_counts(s.get("data")) or {}
    entry = json_safe({
        "job_id": job_id,
        "file": file,
        "state": state,
        "result": result,
        "reason": reason,
        "steps": first("steps", "optimizer_steps", "step"),
        "loss": first("loss", "final_loss", "train_loss"),
        "eval_loss": first("eval_loss", "final_eval_loss"),
        "tokens": first("tokens", "tokens_seen", "train_tokens"),
        "format": data.get("format"),
        "examples": first("examples"),
        "kept": data.get("kept"),
        "dropped_too_long": data.get("dropped_too_long"),
        "truncated": data.get("truncated"),
        "no_trained_tokens": data.get("no_trained_tokens"),
        "seconds": first("seconds", "train_seconds", "elapsed_s") or seconds,
        "finished_at": now_iso(),
    })
    if isinstance(s.get("gate"), dict):  # the gate's decision (trainingd.lifecycle.gate.decide), as in the result
        entry["gate"] = s["gate"]
    append_jsonl(home.history, entry)
    return entry


def read_history(home: Home | str | os.PathLike) -> list[dict]:
    return read_jsonl(_home(home).history)


__all__ = ["SCHEMA_VERSION", "STATUSES", "StatusWriter", "compose_status", "read_status",
           "append_history", "read_history", "status_from_trainer", "empty_control", "data_counts"]
