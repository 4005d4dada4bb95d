"""The trainer's live progress file and per-step metrics log.

``status/trainer_progress.json`` (its fields: ``trainingd.contracts.progress``) is rewritten at every
optimizer step and by a heartbeat thread at least every second while the main thread is busy
loading the model or preparing data, so the daemon can tell a slow start from a hang. The daemon
merges it into ``status/training_status.json``. Metrics go to the append-only ``status/metrics.jsonl``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import append_jsonl
from trainingd.contracts.progress import STATUSES, initial_progress, write_progress

log = logging.getLogger(__name__)

def finite(value: Any) -> Any:
    """``None`` for NaN/inf (JSON readers expect null, never NaN); plain floats otherwise."""
    if value is None or isinstance(value, (bool, int)):
        return value  # counters stay integers in the JSON
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return f if math.isfinite(f) else None


class Progress:
    """Holds the current progress fields and writes them; thread-safe.

    Run-free by default: with ``path=None`` nothing is written (tests of the recipe alone).
    """

    HEARTBEAT_S = 0.5

    def __init__(self, path: Path | None, metrics_path: Path | None, job_id: str):
        self.path = Path(path) if path else None
        self.metrics_path = Path(metrics_path) if metrics_path else None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fields: dict[str, Any] = dict(initial_progress(job_id, os.getpid()))

    def update(self, write: bool = True, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                self.fields[k] = v if isinstance(v, (dict, list, str)) or v is None else finite(v)
        if write:
            self.write()

    def set_status(self, status: str, detail: str = "") -> None:
        assert status in STATUSES, status
        log.info("trainer status: %s %s", status, detail)
        self.update(status=status, status_detail=detail)

    def write(self) -> None:
        if self.path is None:
            return
        with self._lock:
            self.fields["updated_at"] = time.time()
            snapshot = dict(self.fields)
        try:
            write_progress(self.path, snapshot)
        except (OSError, ValueError) as e:  # a view; never let it kill training
            log.warning("could not write %s: %s", self.path, e)

    def metric(self, record: dict[str, Any]) -> None:
        if self.metrics_path is None:
            return
        try:
            append_jsonl(self.metrics_path, {k: finite(v) if not isinstance(v, str) else v
                                             for k, v in record.items()})
        except OSError as e:
            log.warning("could not append to %s: %s", self.metrics_path, e)

    # heartbeat while the main thread is blocked in a long call (model load, tokenization)
    def start_heartbeat(self) -> None:
        if self.path is None or self._thread is not None:
            return
        self._stop.clear()

        def beat() -> None:
            while not self._stop.wait(self.HEARTBEAT_S):
                self.write()

        self._thread = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
