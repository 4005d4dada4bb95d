"""Incremental reading of ``status/metrics.jsonl``, the trainer's append-only per-step log.

A home that has trained for weeks holds a file of millions of lines; the monitor reads it once and afterwards
only the bytes appended since its last read (it remembers the byte offset and the file's inode). The records
are kept as columns of doubles (NaN for null), about 80 bytes a line, so a million lines cost ~80 MB, not the
~600 MB of a list of dicts. A torn last line (the trainer is appending) is left for the next read. A job that
resumed from a checkpoint after a crash writes the steps after it again: the newer rows supersede the older ones
(``query`` returns one point per step), whether or not the older rows are still in the file.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from array import array
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The numeric fields of a metrics line (see trainingd.train.recipe: the step and eval records).
FIELDS = ("t", "step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "tokens_seen", "eval_loss")
READ_CHUNK = 8 << 20


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _out(value: float, integer: bool = False) -> float | int | None:
    if math.isnan(value):
        return None
    return int(value) if integer else value


class MetricsLog:
    """The parsed content of one metrics file, brought up to date by ``refresh()`` (thread-safe)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self.offset = 0
        self.inode = inode
        self.columns = {f: array("d") for f in FIELDS}
        self.job_ids: list[str | None] = []
        self._job_names: dict[str, str] = {}
        self.superseded = bytearray()  # 1: a step redone after a crash wrote a newer row for it
        self._last_step: dict[str | None, float] = {}

    def __len__(self) -> int:
        return len(self.job_ids)

    def refresh(self) -> int:
        """Read what was appended since the last call; returns the number of new records."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                if self.inode is not None:
                    self._reset(None)
                return 0
            if st.st_ino != self.inode or st.st_size < self.offset:  # replaced or truncated: start again
                self._reset(st.st_ino)
            if st.st_size == self.offset:
                return 0
            before = len(self.job_ids)
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                rest = b""
                while True:
                    chunk = f.read(READ_CHUNK)
                    if not chunk:
                        break
                    data = rest + chunk
                    end = data.rfind(b"\n")
                    if end < 0:
                        rest = data
                        continue
                    self._parse(data[:end + 1])
                    self.offset += end + 1
                    rest = data[end + 1:]
            return len(self.job_ids) - before

    def _parse(self, data: bytes) -> None:
        for line in data.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash in the middle of the file; the readers skip it too
            if not isinstance(rec, dict):
                continue
            for f in FIELDS:
                self.columns[f].append(_num(rec.get(f)))
            job = rec.get("job_id")
            job = self._job_names.setdefault(job, job) if isinstance(job, str) else None  # one string per job
            self.job_ids.append(job)
            self.superseded.append(0)
            step = self.columns["step"][-1]
            if math.isnan(self.columns["eval_loss"][-1]) and not math.isnan(step):
                if step <= self._last_step.get(job, -math.inf):
                    self._supersede(job, step)
                self._last_step[job] = step

    def _supersede(self, job: str | None, step: float) -> None:
        """A job resumed from a checkpoint redoes the steps after it: its earlier rows of steps >= ``step``
        (the ones just redone, the tail of that job's rows) give way to the new ones."""
        steps, evals = self.columns["step"], self.columns["eval_loss"]
        for i in range(len(self.job_ids) - 2, -1, -1):
            if self.job_ids[i] != job:
                break  # one job trains at a time: its rows are contiguous
            if math.isnan(evals[i]) and not math.isnan(steps[i]):
                if steps[i] < step:
                    break
                self.superseded[i] = 1

    def query(self, *, since_step: int | None = None, job_id: str | None = None, since_row: int | None = None,
              max_points: int = 2000) -> dict[str, Any]:
        """Records after ``since_row`` (a cursor: ``next_row`` of the previous answer) or with step > since_step.

        ``job_id`` keeps one job's records (the default is every job). At most ``max_points`` are returned,
        evenly spread, always with the last; eval records (rare, and what the eval chart needs) are all kept.
        """
        self.refresh()
        with self._lock:
            n = len(self.job_ids)
            step, eval_loss = self.columns["step"], self.columns["eval_loss"]
            rows = range(max(0, since_row or 0), n)
            keep = [i for i in rows
                    if not self.superseded[i] and (job_id is None or self.job_ids[i] == job_id)
                    and (since_step is None or (not math.isnan(step[i]) and step[i] > since_step))]
            total = len(keep)
            evals = [i for i in keep if not math.isnan(eval_loss[i])]
            train = [i for i in keep if math.isnan(eval_loss[i])]
            train = downsample(train, max(1, max_points))
            picked = sorted(set(train) | set(evals))
            points = [self._record(i) for i in picked]
        return {"rows": n, "next_row": n, "matched": total, "returned": len(points),
                "downsampled": len(points) < total, "points": points}

    def _record(self, i: int) -> dict[str, Any]:
        rec: dict[str, Any] = {"row": i, "job_id": self.job_ids[i]}
        for f in FIELDS:
            rec[f] = _out(self.columns[f][i], integer=f in ("step", "epoch", "tokens_seen"))
        return rec

    def last(self, field: str) -> float | None:
        """The last non-null value of ``field`` (for the Prometheus export)."""
        self.refresh()
        with self._lock:
            col = self.columns[field]
            for i in range(len(col) - 1, max(-1, len(col) - 10_000), -1):
                if not math.isnan(col[i]):
                    return col[i]
        return None


def downsample(items: list, max_points: int) -> list:
    """At most ``max_points`` of ``items``, evenly spread, the first and the last always kept."""
    n = len(items)
    if n <= max_points:
        return items
    if max_points == 1:
        return [items[-1]]
    stride = (n - 1) / (max_points - 1)
    return [items[round(k * stride)] for k in range(max_points)]
