"""The queue commands' handlers (``training_queue.py`` and ``trainingd queue``): each returns a dict.

    python3 training_queue.py add FILE [--priority high|normal|low] [--force] [--home DIR]
    python3 training_queue.py list [--state S] [--json]
    python3 training_queue.py status [--json]
    python3 training_queue.py retry ID
    python3 training_queue.py remove ID [--skip-if-running]

The command line itself (arguments, output, exit codes) is ``trainingd.cli.main``; the text views are in
``trainingd.cli.formatting``. Every change goes through ``trainingd.jobqueue.JobQueue`` (the only code that moves
job files), so these commands are safe while the daemon runs. Nothing is ever deleted: ``remove`` moves a
pending job to ``queue/failed/`` with the reason "removed by user".
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from trainingd.cli.controller import job_dict, send_request
from trainingd.daemon.intake import SUFFIX_REASON, is_ignored
from trainingd.daemon.json_array import NotConvertible, convert
from trainingd.config import ConfigError, load_config
from trainingd.jobqueue import Job, JobQueue
from trainingd.lifecycle.ancestry import find_trained
from trainingd.paths import Home


class CliError(Exception):
    """A refusal with a message for the user (exit 1)."""


def add(home: Home, src: Path, *, priority: str = "normal", force: bool = False) -> dict[str, Any]:
    """Copy ``src`` into the queue (source "cli"); the original stays where it is."""
    src = Path(src).expanduser()
    if not src.exists():
        raise CliError(f"no such file: {src}")
    if src.is_dir():
        raise CliError(f"{src} is a folder, not a file: add the .jsonl files inside it one by one")
    if not src.is_file():
        raise CliError(f"{src} is not a regular file")
    # The inbox's rules (trainingd.daemon.intake): work-in-progress names and other extensions are not training data.
    if is_ignored(src.name):
        raise CliError(f"{src.name}: a name starting with '.' or ending .tmp/.part is a file still being written; "
                       "rename it when it is complete, then add it")
    if not src.name.endswith((".jsonl", ".json")):
        raise CliError(f"{src.name}: {SUFFIX_REASON.replace(' and drop it into inbox/ again', ', then add it')}")
    q = JobQueue(home)
    q.ensure_dirs()
    if src.name.endswith(".json"):
        return _add_json_array(q, src, priority=priority, force=force)
    job = q.add(src, priority=priority, source="cli", force=force)
    return _queued(home, job, f"queued {src.name} as {job.id} (priority {job.priority})")


def _queued(home: Home, job: Job, message: str) -> dict[str, Any]:
    """The answer of ``add``: with ``duplicate_of`` when the live model already holds this content (dedupe follows
    the lineage, ``trainingd.lifecycle.ancestry``: the daemon will complete the job without training it)."""
    hit = None
    if not job.meta.get("force") and _dedupe_on(home):
        hit = find_trained(home, job.meta.get("sha256"), exclude_job=job.id)
    duplicate = {k: hit.get(k) for k in ("job_id", "file", "where")} if hit else None
    if duplicate:
        message += (f"; its content is already trained into the live model ({duplicate['where']}, job "
                    f"{duplicate['job_id']}): it will go to done/ as a duplicate without training (add --force to "
                    "train it again)")
    return {"job": job_dict(job), "duplicate_of": duplicate, "message": message}


def _dedupe_on(home: Home) -> bool:
    try:
        return load_config(home.config).dedupe
    except (ConfigError, OSError):
        return True  # the daemon refuses a broken config anyway; say what a valid one would do by default


def _add_json_array(q: JobQueue, src: Path, *, priority: str, force: bool) -> dict[str, Any]:
    """A JSON array file, converted to JSON Lines and queued as ``<stem>.jsonl`` (the original stays)."""
    work = Path(tempfile.mkdtemp(dir=q.home.root, prefix=".trainingd-convert-"))
    try:
        converted = work / (src.name[:-len(".json")] + ".jsonl")
        try:
            records = convert(src, converted)
        except NotConvertible as e:
            raise CliError(f"{src.name} {e}; a .json file must be one JSON array of objects (or convert it "
                           f"yourself: jq -c '.[]' {src.name} > {converted.name})") from None
        os.chmod(converted, stat.S_IMODE(src.stat().st_mode) & stat.S_IMODE(converted.stat().st_mode) | 0o600)
        job = q.add(converted, priority=priority, source="cli", force=force)
        job = q.update_meta(job, converted_from=src.name, converted_records=records)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _queued(q.home, job, f"converted {src.name} ({records} records) and queued it as {job.id} (priority "
                                f"{job.priority})")


def list_jobs(home: Home, states: list[str] | None = None) -> dict[str, Any]:
    return {"jobs": [job_dict(j) for j in JobQueue(home).jobs(states)]}


def counts(home: Home) -> dict[str, Any]:
    return {"counts": JobQueue(home).counts()}


def retry(home: Home, job_id: str) -> dict[str, Any]:
    job = JobQueue(home).retry(job_id)
    return {"job": job_dict(job), "message": f"{job.id} is pending again (priority {job.priority})"}


def remove(home: Home, job_id: str, *, skip_if_running: bool = False) -> dict[str, Any]:
    """Pending job -> failed ("removed by user"). The running job is refused, or skipped on request."""
    q = JobQueue(home)
    job = q.get(job_id)
    if job.state == "processing":
        if not skip_if_running:
            raise CliError(f"{job.id} is being trained right now; use `training_controller.py skip` "
                           f"(or `remove --skip-if-running`) to abandon it")
        result = send_request(home, "skip")
        if not result["ok"]:
            raise CliError(f"{job.id} is in processing but {result['message']}")
        return {"job": job_dict(job), "skip_request": result["id"],
                "message": f"{job.id} is running: skip requested (id {result['id']}); it will land in failed/"}
    job = q.remove(job_id)
    return {"job": job_dict(job), "message": f"removed {job.id} (now in failed/, reason: removed by user)"}
