"""What each endpoint of the monitor returns, as plain dicts (and text for logs and Prometheus).

Everything is read through the owners of the files: the status and history through
``trainingd.contracts.status``, the queue through ``trainingd.jobqueue.JobQueue``, the metrics log through
``metrics_log.MetricsLog``. A missing file is an empty answer, never an error.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainingd.contracts.status import read_history, read_status
from trainingd.instance import is_daemon_running
from trainingd.jobqueue import Job, JobQueue, QueueError
from trainingd.paths import JOB_STATES, PRIORITIES, Home
from trainingd.monitor import system as system_info
from trainingd.monitor.metrics_log import MetricsLog

log = logging.getLogger(__name__)
_warned: set[str] = set()

STALE_AFTER_S = 30.0
MAX_LOG_LINES = 5000
MAX_PAGE = 500
JOB_KEYS = ("id", "state", "priority", "file", "original_name", "sha256", "size_bytes", "source", "attempts",
            "enqueued_at", "claimed_at", "finished_at", "duplicate_of", "reason", "broken")
HISTORY_KEYS = ("job_id", "file", "state", "result", "reason", "steps", "loss", "eval_loss", "tokens", "seconds",
                "finished_at")


def _age_s(updated_at: Any) -> float | None:
    if not isinstance(updated_at, str):
        return None
    try:
        t = datetime.fromisoformat(updated_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return round((datetime.now(timezone.utc) - t).total_seconds(), 3)


def status_view(home: Home) -> dict[str, Any]:
    """``{"daemon_running", "stale", "age_s", "status": <status document> | null}``.

    ``stale``: a running daemon whose status is older than ``STALE_AFTER_S`` (hung), or a status that says
    it is working while no daemon holds the lock (it died).
    """
    doc = read_status(home)
    running = is_daemon_running(home)
    age = _age_s(doc.get("updated_at")) if doc else None
    busy = bool(doc) and doc.get("status") not in ("idle", "stopped", "error", "paused")
    stale = (running and age is not None and age > STALE_AFTER_S) or (not running and busy)
    return {"daemon_running": running, "stale": stale, "age_s": age, "home": str(home.root), "status": doc}


def job_view(job: Job) -> dict[str, Any]:
    out = {k: job.meta.get(k) for k in JOB_KEYS}
    out.update(id=job.id, state=job.state, priority=job.priority)
    return out


def queue_view(home: Home, state: str | None = None, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """Counts, and one page per state (or of ``state``); done and failed newest first, pending in claim order."""
    q = JobQueue(home)
    limit = max(0, min(limit, MAX_PAGE))
    states = [state] if state else list(JOB_STATES)
    for s in states:
        if s not in JOB_STATES:
            raise QueueError(f"unknown job state {s!r}; expected one of {', '.join(JOB_STATES)}")
    pages = {}
    for s in states:
        total, jobs = q.page(s, offset, limit, newest_first=s in ("done", "failed"))
        pages[s] = {"total": total, "offset": offset, "limit": limit, "jobs": [job_view(j) for j in jobs]}
    return {"daemon_running": is_daemon_running(home), "counts": q.counts(), "states": pages}


class HistoryCache:
    """``status/history.jsonl`` parsed once per change of the file (size, mtime), not once per request."""

    def __init__(self, home: Home):
        self.home = home
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._entries: list[dict] = []

    def entries(self) -> list[dict]:
        try:
            st = os.stat(self.home.history)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            key = None
        with self._lock:
            if key != self._key:
                self._entries = [e for e in read_history(self.home) if isinstance(e, dict)] if key else []
                self._key = key
            return self._entries


EVAL_KEYS = ("finished_at", "job_id", "trigger", "trained_jobs", "trained_examples", "trained_tokens", "exact_match",
             "token_accuracy", "correct", "total", "seconds")


def eval_view(cache: HistoryCache) -> dict[str, Any]:
    """The held-out evaluations of ``status/history.jsonl`` (``"kind": "eval"``), oldest first."""
    evals = [e for e in cache.entries() if e.get("kind") == "eval"]
    return {"total": len(evals), "evals": [{k: e.get(k) for k in EVAL_KEYS} for e in evals]}


def history_view(cache: HistoryCache, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """Finished jobs, newest first: file, steps, final loss, eval loss, duration (``seconds``)."""
    entries = [e for e in cache.entries() if e.get("kind") != "eval"]  # evaluations have their own view
    limit = max(0, min(limit, MAX_PAGE))
    page = list(reversed(entries))[max(0, offset):max(0, offset) + limit]
    return {"total": len(entries), "offset": offset, "limit": limit,
            "jobs": [{k: e.get(k) for k in HISTORY_KEYS} for e in page]}


class NotServed(Exception):
    """A log path that is a link, not a regular file, or outside the home: never opened."""


def open_in_home(home: Home, relative: str) -> int | None:
    """A read-only descriptor of the regular file ``home/relative``, opened without following any link on the way
    (every folder and the file itself with ``O_NOFOLLOW``), so nothing outside the home is ever read through a link
    a user of the home planted. None when it does not exist; raises NotServed when it is not what belongs there."""
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise NotServed(f"{relative} is not a path inside the home")
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fds: list[int] = []
    try:
        fds.append(os.open(home.root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)))
        for part in parts[:-1]:
            fds.append(os.open(part, flags | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fds[-1])  # a FIFO must not block the server
    except FileNotFoundError:
        return None
    except OSError as e:  # ELOOP: a link; ENOTDIR: a folder on the way is a link or a file
        raise NotServed(f"{relative} is a link or not a regular file ({os.strerror(e.errno or 0)}): not served") \
            from None
    finally:
        for d in fds:
            os.close(d)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotServed(f"{relative} is not a regular file: not served")
    return fd


def tail_lines(path: os.PathLike | int, n: int, block: int = 64 << 10) -> list[str]:
    """The last ``n`` lines of a text file (a path, or a descriptor this takes over), reading backwards from its
    end (a log may be large)."""
    if n <= 0:
        if isinstance(path, int):
            os.close(path)
        return []
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    with f:
        f.seek(0, os.SEEK_END)
        pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:]


def daemon_log_path(home: Home) -> str:
    """Today's daemon log relative to the home: ``logs/daemon.log`` is a link the daemon points at its day's file
    (``trainingd.logs``); only a link to a bare ``daemon_YYYYMMDD.log`` name beside it is followed, never further."""
    link = home.daemon_log
    relative = str(link.relative_to(home.root))
    try:
        target = os.readlink(link)
    except OSError:  # missing, or a regular file (an earlier version's log): open it as it is
        return relative
    if "/" in target or not re.fullmatch(rf"{re.escape(link.stem)}_\d{{8}}{re.escape(link.suffix)}", target):
        raise NotServed(f"{relative} links to {target!r}, not to a daily log beside it: not served")
    return str(Path(relative).with_name(target))


def logs_text(home: Home, n: int) -> str:
    try:
        fd = open_in_home(home, daemon_log_path(home))
    except NotServed as e:
        if str(e) not in _warned:  # once per cause, not once per poll
            _warned.add(str(e))
            log.warning("/api/logs: %s", e)
        return f"(trainingd monitor: {e})\n"
    lines = tail_lines(fd, max(0, min(n, MAX_LOG_LINES))) if fd is not None else []
    return "\n".join(lines) + ("\n" if lines else "")


# --- Prometheus text exposition format (version 0.0.4) ---------------------------------------------

def _value(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return repr(float(v)) if isinstance(v, float) else str(v)


def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(home: Home, metrics: MetricsLog) -> str:
    """step, loss, learning rate, tokens/s, queue depth by state, jobs done/failed, GPU memory."""
    out: list[str] = []

    def family(name: str, kind: str, text: str, samples: list[tuple[dict[str, Any], Any]]) -> None:
        rows = [(labels, _value(v)) for labels, v in samples]
        rows = [(labels, v) for labels, v in rows if v is not None]
        if not rows:
            return
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, v in rows:
            lab = ",".join(f'{k}="{_label(x)}"' for k, x in labels.items())
            out.append(f"{name}{{{lab}}} {v}" if lab else f"{name} {v}")

    status = read_status(home) or {}
    job = status.get("job") or {}
    m = status.get("metrics") or {}
    family("trainingd_daemon_running", "gauge", "1 when a daemon holds the home's lock",
           [({}, int(is_daemon_running(home)))])
    family("trainingd_step", "gauge", "optimizer step of the current job", [({}, job.get("step"))])
    family("trainingd_total_steps", "gauge", "steps planned for the current job", [({}, job.get("total_steps"))])
    loss = m.get("loss") if m.get("loss") is not None else metrics.last("loss")
    family("trainingd_loss", "gauge", "last training loss", [({}, loss)])
    family("trainingd_eval_loss", "gauge", "last held-out loss", [({}, m.get("eval_loss"))])
    family("trainingd_learning_rate", "gauge", "current learning rate", [({}, m.get("learning_rate"))])
    family("trainingd_tokens_per_second", "gauge", "training throughput", [({}, m.get("tokens_per_s"))])
    counts = JobQueue(home).counts()
    depth = [({"state": "pending", "priority": p}, counts["pending"][p]) for p in PRIORITIES]
    depth += [({"state": s, "priority": ""}, counts[s]) for s in ("processing", "done", "failed")]
    family("trainingd_queue_jobs", "gauge", "jobs in each queue folder", depth)
    family("trainingd_jobs_done_total", "counter", "jobs finished into done/", [({}, counts["done"])])
    family("trainingd_jobs_failed_total", "counter", "jobs in failed/", [({}, counts["failed"])])
    gpus = system_info.gpus()
    family("trainingd_gpu_memory_used_bytes", "gauge", "GPU memory in use",
           [({"gpu": g["index"], "name": g.get("name")}, g.get("memory_used_bytes")) for g in gpus])
    family("trainingd_gpu_memory_total_bytes", "gauge", "GPU memory",
           [({"gpu": g["index"], "name": g.get("name")}, g.get("memory_total_bytes")) for g in gpus])
    family("trainingd_gpu_utilization_percent", "gauge", "GPU busy percent",
           [({"gpu": g["index"], "name": g.get("name")}, g.get("util_percent")) for g in gpus])
    return "\n".join(out) + "\n"
