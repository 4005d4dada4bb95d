"""``status/trainer_progress.json``: the running trainer's live progress. Stdlib only.

Written by the trainer (``trainingd.train.progress.Progress`` through ``write_progress``: atomically, not
fsynced, since it is a view) at every optimizer step and by a heartbeat at least every second while the model
loads or data is prepared, so the daemon can tell a slow start from a hang. Removed by the daemon before it
starts a trainer (``clear_progress``). Read by the daemon (``read_progress``), which merges it into
``status/training_status.json`` and uses ``pid`` to find a trainer a killed daemon left behind. A standalone
``train.py`` run writes the same document to ``<output-dir>/progress.json``. Fields (``null`` when unknown,
never NaN)::

    job_id, pid                    the job and the trainer's process id
    status                         loading | preparing | training | evaluating | saving | paused | stopping
    status_detail                  free text ("loading the model", "step 40 of 120", ...)
    epoch, step, total_steps       optimizer steps (int)
    progress                       0..1
    examples_done, tokens_seen     counts since the job started
    loss, loss_ema, learning_rate, grad_norm, eval_loss
    tokens_per_s, seconds_per_step, eta_seconds
    prepare                        {phase, lines_done, lines_total} while data is prepared, else null
    data                           the data report (format, examples, kept, dropped_too_long, ...), see status
    notice                         e.g. a checkpoint refused because the adapter moved on
    precision                      fp32 | bf16: the dtype the frozen base trains in (``job.precision``), null
                                   until the model is loaded
    layer_activity_summary         the top changing LoRA modules at the last layer report
                                   (``contracts.layer_activity.summary``), null before the first one
    updated_at                     seconds since the epoch (float)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional, TypedDict

from trainingd.atomic_ops import atomic_write_json, read_json
from trainingd.paths import Home

STATUSES = ("loading", "preparing", "training", "evaluating", "saving", "paused", "stopping")
# The job's position and the metrics, as the status file shows them under ``job`` and ``metrics``.
JOB_FIELDS = ("epoch", "step", "total_steps", "progress", "examples_done", "tokens_seen")
METRIC_FIELDS = ("loss", "loss_ema", "learning_rate", "grad_norm", "eval_loss", "tokens_per_s", "seconds_per_step",
                 "eta_seconds")
PREPARE_FIELDS = ("phase", "lines_done", "lines_total")
# How a step is cut up: examples per forward pass (halved after an out-of-memory error), forwards per optimizer
# step, training processes, and examples per optimizer step over all of them (``job.batch`` in the status).
BATCH_FIELDS = ("micro_batch_size", "gradient_accumulation", "num_processes", "effective_batch_size")
FIELDS = ("job_id", "pid", "status", "status_detail", *JOB_FIELDS, *METRIC_FIELDS, *BATCH_FIELDS, "prepare", "data",
          "notice", "precision",
          "layer_activity_summary", "updated_at")


class ProgressDoc(TypedDict, total=False):
    job_id: str
    pid: int
    status: str
    status_detail: Optional[str]
    epoch: Optional[int]
    step: Optional[int]
    total_steps: Optional[int]
    progress: Optional[float]
    examples_done: Optional[int]
    tokens_seen: Optional[int]
    loss: Optional[float]
    loss_ema: Optional[float]
    learning_rate: Optional[float]
    grad_norm: Optional[float]
    eval_loss: Optional[float]
    tokens_per_s: Optional[float]
    seconds_per_step: Optional[float]
    eta_seconds: Optional[float]
    micro_batch_size: Optional[int]
    gradient_accumulation: Optional[int]
    num_processes: Optional[int]
    effective_batch_size: Optional[int]
    prepare: Optional[dict]
    data: Optional[dict]
    notice: Optional[str]
    precision: Optional[str]
    layer_activity_summary: Optional[dict]
    updated_at: float


def initial_progress(job_id: str, pid: int | None = None) -> ProgressDoc:
    """Every field, unknown ones ``None``: what a trainer reports before it knows anything."""
    doc: dict[str, Any] = dict.fromkeys(FIELDS)
    doc.update(job_id=job_id, pid=os.getpid() if pid is None else pid, status="loading", status_detail="starting",
               updated_at=time.time())
    return doc  # type: ignore[return-value]


def write_progress(path: Path, doc: ProgressDoc | dict) -> None:
    """Replace the progress file atomically (not fsynced: a view). Raises OSError/ValueError."""
    atomic_write_json(Path(path), doc, durable=False)


def read_progress(home: Home, job_id: str | None = None) -> ProgressDoc | None:
    """The trainer's progress; None when missing, unreadable, not an object or about another job."""
    try:
        data = read_json(home.trainer_progress, None)
    except (ValueError, OSError):
        return None
    if not isinstance(data, dict):
        return None
    if job_id is not None and data.get("job_id") != job_id:
        return None
    return data  # type: ignore[return-value]


def clear_progress(home: Home) -> None:
    """Remove the progress file (before a trainer starts: never show an earlier attempt's progress)."""
    home.trainer_progress.unlink(missing_ok=True)
