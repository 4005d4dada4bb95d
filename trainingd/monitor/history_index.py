"""``status/history.jsonl`` indexed for the monitor, not held in memory. Stdlib only.

A stream that runs for weeks appends a line per job and per evaluation. Holding them parsed grew the monitor by
about 1.8 KB a job (a soak's short lines; a gate's are longer). The index parses each line once, when it is
appended (reading only the bytes added since it last looked), and keeps a few numbers a line: the byte offset of
each job line with the offsets of the evaluation before it and of the one it triggered, and the offset of each
evaluation. A page of the jobs table reads its own lines back; the evaluation chart gets at most ``max_points``
evaluations, evenly spread and always the newest::

    index = HistoryIndex(home)
    total, page = index.jobs_page(offset=0, limit=50)   # newest first: [(job line, eval before, eval after)]
    total, evals = index.evals(max_points=1000)          # oldest first
    index.find_job("000042-data")                        # the job's newest line, or None

A file that shrank or was replaced (another inode) is indexed again from its start; a line still being written
(no newline yet) waits for the next look; a line that is not a JSON object is skipped (as ``read_history`` does).
"""

from __future__ import annotations

import json
import os
import threading
from array import array
from collections import OrderedDict

from trainingd.atomic_ops import appended_lines
from trainingd.paths import Home

# An evaluation names the job that triggered it, appended just after that job's line: only the newest jobs are
# looked up by id.
RECENT_JOBS = 256


def _parse(line: bytes) -> dict | None:
    try:
        entry = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return entry if isinstance(entry, dict) else None


def spread(n: int, max_points: int) -> list[int]:
    """At most ``max_points`` indices of ``range(n)``, evenly spread, the first and the last always in."""
    if n <= max_points:
        return list(range(n))
    if max_points <= 1:
        return [n - 1] if max_points == 1 else []
    return sorted({round(i * (n - 1) / (max_points - 1)) for i in range(max_points)})


class HistoryIndex:
    def __init__(self, home: Home):
        self.home = home
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self._inode, self._offset = inode, 0
        self._jobs, self._before, self._after = array("q"), array("q"), array("q")
        self._evals = array("q")
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._last_eval = -1
        self._cached: tuple[tuple, tuple[int, list[dict]]] | None = None  # the last evaluations asked for

    def _refresh(self) -> None:
        """Index the lines appended since the last look (the lock is held)."""
        try:
            st = os.stat(self.home.history)
        except FileNotFoundError:
            self._reset(None)
            return
        if st.st_ino != self._inode or st.st_size < self._offset:
            self._reset(st.st_ino)
        if st.st_size == self._offset:
            return
        self._cached = None
        for at, line in appended_lines(self.home.history, self._offset):
            self._add(at, line)
            self._offset = at + len(line) + 1

    def _add(self, at: int, line: bytes) -> None:
        entry = _parse(line)
        if entry is None:
            return
        kind, job_id = entry.get("kind"), entry.get("job_id")
        if kind == "eval":
            self._evals.append(at)
            i = self._recent.get(job_id) if isinstance(job_id, str) else None
            if i is not None and self._after[i] < 0:
                self._after[i] = at
            self._last_eval = at
        elif kind is None:  # other kinds of line (a gate reset, ...) are not jobs
            self._jobs.append(at)
            self._before.append(self._last_eval)
            self._after.append(-1)
            if isinstance(job_id, str):
                self._recent[job_id] = len(self._jobs) - 1
                self._recent.move_to_end(job_id)
                if len(self._recent) > RECENT_JOBS:
                    self._recent.popitem(last=False)

    def _read(self, offsets: list[int], inode: int | None) -> list[dict | None]:
        """The lines at ``offsets`` (None for -1), from the file indexed; all None when it was replaced since."""
        out: list[dict | None] = [None] * len(offsets)
        if not any(at >= 0 for at in offsets):
            return out
        try:
            with open(self.home.history, "rb") as f:
                if os.fstat(f.fileno()).st_ino != inode:
                    return out  # the next look indexes the new file
                for k, at in enumerate(offsets):
                    if at >= 0:
                        f.seek(at)
                        out[k] = _parse(f.readline())
        except OSError:
            pass
        return out

    def jobs_page(self, offset: int = 0, limit: int = 50) -> tuple[int, list[tuple[dict, dict | None, dict | None]]]:
        """``(total, page)``: finished jobs newest first, each with the evaluation before it and the one it
        triggered (None when there is none)."""
        with self._lock:
            self._refresh()
            total, inode = len(self._jobs), self._inode
            picked = range(total - 1 - max(0, offset), max(-1, total - 1 - max(0, offset) - max(0, limit)), -1)
            rows = [(self._jobs[i], self._before[i], self._after[i]) for i in picked]
        lines = self._read([at for row in rows for at in row], inode)
        page = [(lines[3 * k], lines[3 * k + 1], lines[3 * k + 2]) for k in range(len(rows))]
        return total, [(job, before, after) for job, before, after in page if job is not None]

    def evals(self, max_points: int = 1000, keys: tuple[str, ...] | None = None) -> tuple[int, list[dict]]:
        """``(total, evaluations)``: oldest first, at most ``max_points`` of them, only ``keys`` of each when given
        (the last answer is kept until the file grows)."""
        with self._lock:
            self._refresh()
            if self._cached is None or self._cached[0] != (max_points, keys):
                offsets = [self._evals[i] for i in spread(len(self._evals), max_points)]
                evals = [e if keys is None else {k: e.get(k) for k in keys}
                         for e in self._read(offsets, self._inode) if e]
                self._cached = ((max_points, keys), (len(self._evals), evals))
            return self._cached[1]

    def find_job(self, job_id: str) -> dict | None:
        """The newest job line of ``job_id`` (a read of the whole file for one that is not among the newest)."""
        with self._lock:
            self._refresh()
            i, inode, end = self._recent.get(job_id), self._inode, self._offset
            at = self._jobs[i] if i is not None else -1
        if at >= 0:
            return self._read([at], inode)[0]
        found = None
        try:
            with open(self.home.history, "rb") as f:
                if os.fstat(f.fileno()).st_ino != inode:
                    return None
                read = 0
                for line in f:
                    read += len(line)
                    if read > end:  # what was appended since the look is not indexed yet
                        break
                    entry = _parse(line)
                    if entry and entry.get("kind") is None and entry.get("job_id") == job_id:
                        found = entry
        except OSError:
            return None
        return found


__all__ = ["HistoryIndex", "RECENT_JOBS", "spread"]
