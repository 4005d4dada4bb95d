"""Incremental reading of ``status/metrics.jsonl``, the trainer's append-only per-step log.

A home that has trained for weeks holds a file of millions of lines; the monitor reads it once and afterwards
only the bytes appended since its last read (it remembers the byte offset and the file's inode). The records
are kept as columns of doubles (NaN for null), about 80 bytes a line, so a million lines cost ~80 MB, not the
~600 MB of a list of dicts. A torn last line (the trainer is appending) is left for the next read. A job that
resumed from a checkpoint after a crash writes the steps after it again: the newer rows supersede the older ones
(``query`` returns one point per step), whether or not the older rows are still in the file.

Beside the raw fields each record gets its position on the adapter's whole life, kept as columns too, so a chart
of a stream of many short files can use one axis across jobs (``query_life``): examples and tokens trained so far
(each job's counts start from the previous job's last), optimizer steps so far, and training time with idle gaps
between records compressed to ``IDLE_GAP_S``.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
import threading
import time
from array import array
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The numeric fields of a metrics line (see trainingd.train.recipe: the step and eval records).
FIELDS = ("t", "step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s", "tokens_seen", "examples_done",
          "eval_loss")
# The life axes a chart can use (``query_life(axis=...)``), each a column that grows across jobs.
AXES = {"examples": "life_examples", "tokens": "life_tokens", "steps": "life_steps", "time": "life_seconds"}
LIFE = tuple(AXES.values())
# A pause between two records longer than this (the queue ran dry, the daemon was stopped) counts as this long
# on the "time" axis, so a stream that idled overnight does not squeeze the day's training into a few pixels.
IDLE_GAP_S = 30.0
LIFE_POINT_FIELDS = ("step", "loss", "learning_rate", "tokens_per_s", "eval_loss")
WINDOW_24H_S = 86400.0
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
        self.columns = {f: array("d") for f in FIELDS + LIFE}
        self.job_ids: list[str | None] = []
        self._job_names: dict[str, str] = {}
        self.superseded = bytearray()  # 1: a step redone after a crash wrote a newer row for it
        self._last_step: dict[str | None, float] = {}
        # (first row, job id) of each run of rows of one job, in file order: the file boundaries
        self.job_starts: list[tuple[int, str | None]] = []
        self.eval_rows = array("q")  # rows that are eval records (rare; a chart keeps them all)
        # the life position reached: the finished jobs' totals, and the current job's last counts
        self._base = {"examples": 0.0, "tokens": 0.0, "steps": 0.0}
        self._last = {"examples": 0.0, "tokens": 0.0, "steps": 0.0}
        self._life_seconds = 0.0
        self._last_t = math.nan

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
            if not self.job_ids or job != self.job_ids[-1]:
                self._start_job(len(self.job_ids), job)
            if not math.isnan(self.columns["eval_loss"][-1]):
                self.eval_rows.append(len(self.job_ids))
            self.job_ids.append(job)
            self.superseded.append(0)
            step = self.columns["step"][-1]
            if math.isnan(self.columns["eval_loss"][-1]) and not math.isnan(step):
                if step <= self._last_step.get(job, -math.inf):
                    self._supersede(job, step)
                self._last_step[job] = step
            self._add_life(rec)

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

    def _start_job(self, row: int, job: str | None) -> None:
        self.job_starts.append((row, job))
        for k in self._base:
            self._base[k] += self._last[k]
            self._last[k] = 0.0

    def _add_life(self, rec: dict) -> None:
        """Append this record's life position (a record without a count keeps the job's last one)."""
        counts = {"examples": rec.get("examples_done"), "tokens": rec.get("tokens_seen"), "steps": rec.get("step")}
        for k, v in counts.items():
            v = _num(v)
            if not math.isnan(v):
                # a step redone after a resume goes back to where its superseded row was (``superseded``)
                self._last[k] = v
        t = _num(rec.get("t"))
        if not math.isnan(t):
            if not math.isnan(self._last_t):
                self._life_seconds += min(max(0.0, t - self._last_t), IDLE_GAP_S)
            self._last_t = t
        for k in ("examples", "tokens", "steps"):
            self.columns[AXES[k]].append(self._base[k] + self._last[k])
        self.columns["life_seconds"].append(self._life_seconds)

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
            rec[f] = _out(self.columns[f][i], integer=f in ("step", "epoch", "tokens_seen", "examples_done"))
        return rec

    def query_life(self, *, axis: str = "examples", window: str = "all", x_min: float | None = None,
                   x_max: float | None = None, max_points: int = 2000, now: float | None = None) -> dict[str, Any]:
        """The records of ``window`` on one life ``axis`` (see ``AXES``), downsampled to ``max_points``.

        ``window``: ``all``; ``job`` (the last job's records); ``jobs:N`` (the last N jobs); ``24h`` (records of
        the last day). ``x_min``/``x_max`` narrow it to a zoomed range of the axis. Each point carries ``x``;
        ``boundaries`` holds where each job of the window starts on the axis (with its job id), so a chart can mark
        the files. Raises ValueError for an unknown axis or window.
        """
        if axis not in AXES:
            raise ValueError(f"axis must be one of {', '.join(AXES)}, not {axis!r}")
        self.refresh()
        with self._lock:
            n = len(self.job_ids)
            xs = self.columns[AXES[axis]]
            first = self._window_start(window, n, time.time() if now is None else now)
            last = n
            # every life axis grows along the file (but for the superseded rows of a resumed job, a few at most),
            # so a zoomed range is two binary searches
            if x_min is not None:
                first = bisect.bisect_left(xs, x_min, first, n)
            if x_max is not None:
                last = bisect.bisect_right(xs, x_max, first, n)
            evals = self.eval_rows[bisect.bisect_left(self.eval_rows, first):bisect.bisect_left(self.eval_rows, last)]
            picked = [i for i in sorted(set(spread(first, last, max(1, max_points))) | set(evals))
                      if not self.superseded[i]]
            # only what a chart draws: a life of 2000 points stays a small answer
            cols = {f: self.columns[f] for f in LIFE_POINT_FIELDS}
            points = [{"x": xs[i], "job_id": self.job_ids[i],
                       **{f: _out(c[i], integer=f == "step") for f, c in cols.items()}} for i in picked]
            # a job starts where the one before it ended on the axis
            boundaries = [{"row": r, "job_id": j, "x": xs[r - 1] if r else 0.0}
                          for r, j in self.job_starts if first <= r < last]
            if first < last and (not boundaries or boundaries[0]["row"] > first):  # the window starts mid-job
                boundaries.insert(0, {"row": first, "job_id": self.job_ids[first], "x": xs[first]})
            matched = last - first
        return {"axis": axis, "window": window, "rows": n, "matched": matched, "returned": len(points),
                "downsampled": len(points) < matched, "jobs": len(boundaries), "boundaries": boundaries,
                "points": points}

    def _window_start(self, window: str, n: int, now: float) -> int:
        """The first row of ``window`` (the lock is held)."""
        if window == "all":
            return 0
        if window == "24h":  # from the end back to the first record older than a day
            t, i = self.columns["t"], n
            while i > 0 and (math.isnan(t[i - 1]) or t[i - 1] >= now - WINDOW_24H_S):
                i -= 1
            return i
        if window == "job":
            return self.job_starts[-1][0] if self.job_starts else 0
        if window.startswith("jobs:"):
            try:
                count = int(window[5:])
            except ValueError:
                count = 0
            if count < 1:
                raise ValueError(f"window jobs:N needs a whole number N >= 1, not {window!r}")
            return self.job_starts[-count][0] if len(self.job_starts) >= count else 0
        raise ValueError(f"window must be all, job, jobs:N or 24h, not {window!r}")

    def last(self, field: str) -> float | None:
        """The last non-null value of ``field`` (for the Prometheus export)."""
        self.refresh()
        with self._lock:
            col = self.columns[field]
            for i in range(len(col) - 1, max(-1, len(col) - 10_000), -1):
                if not math.isnan(col[i]):
                    return col[i]
        return None


def spread(first: int, last: int, max_points: int) -> range | list[int]:
    """At most ``max_points`` row numbers of ``range(first, last)``, evenly spread, the first and last kept."""
    n = last - first
    if n <= max_points:
        return range(first, last)
    if max_points == 1:
        return [last - 1]
    stride = (n - 1) / (max_points - 1)
    return [first + round(k * stride) for k in range(max_points)]


def downsample(items: list, max_points: int) -> list:
    """At most ``max_points`` of ``items``, evenly spread, the first and the last always kept."""
    n = len(items)
    if n <= max_points:
        return items
    if max_points == 1:
        return [items[-1]]
    stride = (n - 1) / (max_points - 1)
    return [items[round(k * stride)] for k in range(max_points)]
