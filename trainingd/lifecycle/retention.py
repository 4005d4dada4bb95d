"""Disk housekeeping: what ``trainingd clean`` removes, listed first, then removed. Stdlib only.

    trainingd clean [--dry-run] [--home DIR] [--json]

The policy (config.json: ``keep_snapshots``, ``keep_rejected``, ``retention.keep_done_days``,
``retention.log_retention_days``): checkpoints of done jobs; unpinned snapshots beyond the newest
``keep_snapshots``; rejected candidates beyond the newest ``keep_rejected``; rotated daemon logs, rotated
metrics/trainer logs and TensorBoard runs older than ``log_retention_days``; tokenized caches of files no pending
or running job holds; the data files of done jobs finished more than ``keep_done_days`` ago (their job.json and
result stay). Big ``status/metrics.jsonl`` and ``logs/training_output.log`` are rotated (renamed with a date) when
no job is running. It never touches a base model, ``current_model/`` itself, a pending or running job, or
anything in ``queue/failed/``. ``--dry-run`` prints exactly the list that ``clean`` then removes.

The daemon runs the same ``clean`` once a day when ``retention.enabled`` is true (``maybe_run_daily``).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import RETIRED_PREFIX, read_json, retire_folder
from trainingd.config import Config
from trainingd.contracts.job import read_job
from trainingd.paths import Home

log = logging.getLogger(__name__)

ROTATE_BYTES = 64 * 2**20
STAMP_FILE = "last_clean.json"
DAY_S = 86400.0
REJECTED_KIND = "rejected candidate beyond keep_rejected"
_next_look: dict[str, float] = {}


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _iso_ts(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except (TypeError, ValueError):
        return None


def _job_dirs(folder: Path) -> list[Path]:
    return [d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")] if folder.is_dir() else []


def _live_jobs(home: Home) -> list[Path]:
    """Job folders that must not be touched: pending (every priority) and processing."""
    out = _job_dirs(home.processing)
    for prio in ("high", "normal", "low"):
        out += _job_dirs(home.pending(prio))
    return out


def plan(home: Home, cfg: Config, now: float | None = None) -> list[dict[str, Any]]:
    """``[{"path", "kind", "bytes", "action": "remove"|"rotate"}]``: what ``clean`` does, in order."""
    now = time.time() if now is None else now
    items: list[dict[str, Any]] = []

    def add(path: Path, kind: str, action: str = "remove") -> None:
        items.append({"path": str(path), "kind": kind, "bytes": _size(path), "action": action})

    live = _live_jobs(home)
    live_ids = {d.name for d in live}
    done_ids = {d.name for d in _job_dirs(home.done)}
    # checkpoints of done jobs (and what a killed removal left)
    for d in sorted(home.checkpoints.iterdir()) if home.checkpoints.is_dir() else ():
        if d.is_dir() and (d.name in done_ids or d.name.startswith(".retired-")) and d.name not in live_ids:
            add(d, "checkpoints of a done job")
    # snapshots beyond keep_snapshots (pinned never)
    from trainingd.lifecycle.snapshots import prunable_rejected, prunable_snapshots

    for p in prunable_snapshots(home, cfg.keep_snapshots):
        add(p, "snapshot beyond keep_snapshots")
    for p in prunable_rejected(home, cfg.keep_rejected):  # the daemon prunes after each rejection; a lowered
        add(p, REJECTED_KIND)                             # keep_rejected takes effect here
    # logs
    log_cut = now - cfg.retention.log_retention_days * DAY_S
    # earlier days' daemon logs: daemon_YYYYMMDD.log (today's is the one daemon.log points at) and the
    # daemon.YYYY-MM-DD.log of earlier versions
    today = home.daemon_log.resolve() if home.daemon_log.is_symlink() else None
    daily = [p for p in home.logs.glob("daemon_*.log") if p.stem[len("daemon_"):].isdigit() and p.resolve() != today]
    rotated = [*home.logs.glob("daemon.*.log"), *daily, *home.logs.glob("training_output.*.log"),
               *home.status_dir.glob("metrics.*.jsonl")]
    for p in sorted(rotated):
        if p.is_file() and p.stat().st_mtime < log_cut:
            add(p, "rotated log older than log_retention_days")
    for d in sorted(home.tensorboard.iterdir()) if home.tensorboard.is_dir() else ():
        if d.is_dir() and d.name not in live_ids and d.stat().st_mtime < log_cut:
            add(d, "TensorBoard run older than log_retention_days")
    # tokenized caches no pending or running job needs
    live_sha = {(read_job(d)[0] or {}).get("sha256") for d in live}
    for d in sorted(home.cache.iterdir()) if home.cache.is_dir() else ():
        report = read_json(d / "report.json", None) if d.is_dir() else None
        if isinstance(report, dict) and report.get("sha256") not in live_sha:
            add(d, "tokenized cache of a finished file")
    # data files of done jobs older than keep_done_days (job.json, result and reason stay)
    done_cut = now - cfg.retention.keep_done_days * DAY_S
    for d in sorted(_job_dirs(home.done)):
        meta = read_job(d)[0] or {}
        finished = _iso_ts(meta.get("finished_at"))
        name = meta.get("file")
        if finished is None or finished >= done_cut or not name:
            continue
        data = d / name
        if data.is_file() and not data.is_symlink():
            add(data, "data file of a done job older than keep_done_days")
    # rotation of the two ever-growing files, only while no job runs (the trainer appends to them)
    if not _job_dirs(home.processing):
        for p in (home.metrics, home.training_log):
            if p.is_file() and p.stat().st_size > ROTATE_BYTES:
                add(p, "rotated: larger than 64 MiB", action="rotate")
    return items


def _rotate(path: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    dest = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    os.rename(path, dest)
    return dest


def clean(home: Home, cfg: Config, *, dry_run: bool = False) -> dict[str, Any]:
    """Apply (or with ``dry_run`` only list) the retention policy; returns what was (or would be) freed."""
    items = plan(home, cfg)
    done = []
    for it in items:
        if dry_run:
            continue
        p = Path(it["path"])
        try:
            if it["action"] == "rotate":
                it["rotated_to"] = str(_rotate(p))
            elif it["kind"] == REJECTED_KIND:
                from trainingd.lifecycle.snapshots import retire_rejected

                retire_rejected(home, p)  # its job's job.json says where the candidate went
            elif p.is_dir() and p.name.startswith(RETIRED_PREFIX):
                shutil.rmtree(p, ignore_errors=True)  # what a kill left of an earlier retirement
            elif p.is_dir():
                retire_folder(p)
            else:
                p.unlink(missing_ok=True)
            done.append(it)
        except OSError as e:
            it["error"] = str(e)
            log.warning("clean: cannot remove %s: %s", p, e)
    freed = sum(it["bytes"] for it in (items if dry_run else done) if it["action"] == "remove")
    return {"dry_run": dry_run, "items": items, "bytes_freed": freed,
            "message": format_clean(items, freed, dry_run)}


def format_clean(items: list[dict[str, Any]], freed: int, dry_run: bool) -> str:
    if not items:
        return "nothing to clean"
    verb = "would free" if dry_run else "freed"
    lines = [f"{'would ' if dry_run else ''}{it['action']} {it['path']}  ({it['bytes'] / 2**20:.1f} MiB, {it['kind']})"
             for it in items]
    return "\n".join(lines + [f"{verb} {freed / 2**20:.1f} MiB"])


def maybe_run_daily(home: Home, cfg: Config) -> dict[str, Any] | None:
    """The daemon's daily run (when ``retention.enabled``): at most once per 24 h, remembered in status/."""
    if not cfg.retention.enabled or time.monotonic() < _next_look.get(str(home.root), 0.0):
        return None
    _next_look[str(home.root)] = time.monotonic() + 60.0  # the stamp file is read once a minute, not every tick
    stamp = home.status_dir / STAMP_FILE
    last = (read_json(stamp, {}) or {}).get("at", 0)
    if time.time() - float(last or 0) < DAY_S:
        return None
    from trainingd.atomic_ops import atomic_write_json

    result = clean(home, cfg)
    atomic_write_json(stamp, {"at": time.time(), "bytes_freed": result["bytes_freed"],
                              "items": len(result["items"])}, durable=False)
    log.info("daily clean: freed %.1f MiB in %d item(s)", result["bytes_freed"] / 2**20, len(result["items"]))
    return result
