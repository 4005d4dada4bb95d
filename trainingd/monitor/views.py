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

from trainingd.contracts.layer_history import read_layer_history
from trainingd.contracts.status import read_status
from trainingd.instance import is_daemon_running
from trainingd.jobqueue import Job, JobQueue, QueueError
from trainingd.lifecycle.snapshots import lineage, list_snapshots
from trainingd.paths import JOB_STATES, PRIORITIES, Home
from trainingd.monitor import system as system_info
from trainingd.monitor.history_index import HistoryIndex
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


EVAL_KEYS = ("finished_at", "job_id", "trigger", "trained_jobs", "trained_examples", "trained_tokens", "exact_match",
             "token_accuracy", "correct", "total", "seconds")


MAX_EVAL_POINTS = 1000


def eval_view(index: HistoryIndex, max_points: int = MAX_EVAL_POINTS) -> dict[str, Any]:
    """The held-out evaluations of ``status/history.jsonl`` (``"kind": "eval"``), oldest first: at most
    ``max_points``, evenly spread over all of them and always the newest (``total`` counts them all)."""
    total, evals = index.evals(max_points, EVAL_KEYS)
    return {"total": total, "evals": evals}


def history_view(index: HistoryIndex, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    """Finished jobs, newest first: file, steps, final loss, eval loss, duration (``seconds``)."""
    limit = max(0, min(limit, MAX_PAGE))
    total, page = index.jobs_page(offset, limit)
    return {"total": total, "offset": offset, "limit": limit,
            "jobs": [{k: e.get(k) for k in HISTORY_KEYS} for e, _, _ in page]}


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


JOB_ROW_KEYS = ("job_id", "file", "state", "result", "reason", "format", "examples", "kept", "dropped_too_long",
                "truncated", "no_trained_tokens", "steps", "loss", "eval_loss", "tokens", "seconds", "finished_at")


def _score(e: dict | None) -> dict | None:
    if not isinstance(e, dict):
        return None
    return {k: e.get(k) for k in ("exact_match", "token_accuracy", "correct", "total")}


def _gate(entry: dict) -> dict | None:
    """The gate's decision on a job, when the gate judged it: ``{decision, reason, champion, candidate}``."""
    gate = entry.get("gate")
    if not isinstance(gate, dict):
        return None
    return {"decision": gate.get("decision") or gate.get("outcome"), "reason": gate.get("reason"),
            "champion": _score(gate.get("champion")), "candidate": _score(gate.get("candidate"))}


def job_row(entry: dict, before: dict | None, after: dict | None) -> dict:
    """The jobs table's row of one finished job, with the held-out score before and after it.

    "Before" is the last evaluation before the job ended; "after" the evaluation the job triggered (an eval
    entry naming it, which the daemon appends after the job's own line). When the gate judged the job, its
    champion and candidate scores are the before and after (measured on the same examples).
    """
    row = {k: entry.get(k) for k in JOB_ROW_KEYS}
    tokens, seconds = entry.get("tokens"), entry.get("seconds")
    row["tokens_per_s"] = (round(tokens / seconds, 3) if isinstance(tokens, (int, float))
                           and isinstance(seconds, (int, float)) and seconds > 0 else None)
    row["gate"] = _gate(entry)
    row["score_before"] = _score(before)
    row["score_after"] = _score(after)
    if row["gate"]:
        row["score_before"] = row["gate"]["champion"] or row["score_before"]
        row["score_after"] = row["gate"]["candidate"]
    row["snapshot"] = None
    return row


class SnapshotIndex:
    """Which snapshot holds each job's adapter, listed again only when ``snapshots/`` changes."""

    def __init__(self, home: Home):
        self.home = home
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._by_job: dict[str, dict] = {}

    def by_job(self) -> dict[str, dict]:
        try:
            st = os.stat(self.home.snapshots)
            key = (st.st_ino, st.st_mtime_ns)
        except OSError:
            key = None
        with self._lock:
            if key != self._key:
                self._by_job = {}
                for s in list_snapshots(self.home) if key else []:
                    job = (s["manifest"].get("trained_file") or {}).get("job_id")
                    if job:
                        self._by_job[job] = {"name": s["name"], "pinned": s["pinned"],
                                             "rejected": bool(s["manifest"].get("rejected"))}
                self._key = key
            return self._by_job


def jobs_view(index: HistoryIndex, snaps: SnapshotIndex, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """The jobs table: finished jobs newest first, one page, each with its scores, gate decision and snapshot."""
    limit = max(0, min(limit, MAX_PAGE))
    total, page = index.jobs_page(offset, limit)
    by_job = snaps.by_job()
    rows = [job_row(entry, before, after) for entry, before, after in page]
    return {"total": total, "offset": offset, "limit": limit,
            "jobs": [{**row, "snapshot": by_job.get(row["job_id"])} for row in rows]}


def lineage_view(home: Home, index: HistoryIndex, job_id: str) -> dict[str, Any] | None:
    """One job's history line, its place in the live adapter's lineage and its snapshot; None if unknown."""
    history = index.find_job(job_id)
    doc = lineage(home)
    entry = next((c for c in doc["chain"] if c.get("job_id") == job_id), None)
    snap = next((s for s in reversed(list_snapshots(home))
                 if (s["manifest"].get("trained_file") or {}).get("job_id") == job_id), None)
    if history is None and entry is None and snap is None:
        return None
    return {"job_id": job_id, "history": history, "lineage": entry, "in_live_adapter": entry is not None,
            "snapshot": {"name": snap["name"], "pinned": snap["pinned"], "manifest": snap["manifest"]} if snap
            else None, "base_model": doc.get("base_model"), "generation": doc.get("generation")}


class LayerHistoryCache:
    """``status/layer_history.jsonl`` summarised once per change of the file (the trainer appends every report)."""

    def __init__(self, home: Home, top: int = 8, max_jobs: int = 60):
        self.home = home
        self.top = top
        self.max_jobs = max_jobs
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._view: dict[str, Any] = layer_history_view([], top, max_jobs)

    def view(self) -> dict[str, Any]:
        try:
            st = os.stat(self.home.layer_history)
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        with self._lock:
            if key != self._key:
                reports = read_layer_history(self.home.layer_history) if key else []
                self._view = layer_history_view(reports, self.top, self.max_jobs)
                self._key = key
            return self._view


def layer_history_view(reports: list[dict], top: int = 8, max_jobs: int = 60) -> dict[str, Any]:
    """The adapter's life seen by its LoRA modules, from the trainer's bounded report history.

    ``life``: the update norm of the ``top`` modules that are largest now, at each report, against optimizer
    steps over the adapter's life (each job's steps start from the previous job's last). ``per_job``: for each of
    the last ``max_jobs`` jobs, how far each module's update norm moved during that job (its last report against
    the previous job's last), the columns of a modules x jobs heatmap. ``ranked``: modules by their total movement.
    """
    life_x: list[float] = []
    base = last_step = 0.0
    job_last: dict[str, dict] = {}
    order: list[str] = []
    prev_job: Any = object()
    for r in reports:
        job = r.get("job_id")
        if job != prev_job:
            base += last_step
            last_step = 0.0
            prev_job = job
            if isinstance(job, str) and job not in job_last:
                order.append(job)
        step = r.get("step")
        if isinstance(step, (int, float)):
            last_step = max(last_step, float(step))
        life_x.append(base + last_step)
        if isinstance(job, str):
            job_last[job] = r["modules"]
    latest = reports[-1]["modules"] if reports else {}
    names = list(latest)
    top_names = sorted((n for n in names if _num(latest[n], 0) is not None),
                       key=lambda n: -latest[n][0])[:top]
    series = {n: [_num(r["modules"].get(n), 0) for r in reports] for n in top_names}
    changes: list[list[float | None]] = []
    previous: dict = {}
    for job in order:
        now = job_last[job]
        changes.append([_delta(now.get(n), previous.get(n)) for n in names])
        previous = now
    totals = [sum(c[i] for c in changes if c[i] is not None) for i in range(len(names))]
    ranked = sorted(range(len(names)), key=lambda i: -totals[i])[:top]
    return {"reports": len(reports), "life": {"x": life_x, "series": series},
            "per_job": {"jobs": order[-max_jobs:], "modules": names, "change": changes[-max_jobs:]},
            "ranked": [{"name": names[i], "total_change": round(totals[i], 6)} for i in ranked]}


def _num(values: Any, i: int) -> float | None:
    if isinstance(values, list) and len(values) > i and isinstance(values[i], (int, float)):
        return float(values[i])
    return None


def _delta(now: Any, before: Any) -> float | None:
    a = _num(now, 0)
    if a is None:
        return None
    return abs(a - (_num(before, 0) or 0.0))


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
