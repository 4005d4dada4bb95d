"""The queue from the shell (``training_queue.py`` and ``trainingd queue``): handlers return dicts.

    python3 training_queue.py add FILE [--priority high|normal|low] [--force] [--home DIR]
    python3 training_queue.py list [--state S] [--json]
    python3 training_queue.py status [--json]
    python3 training_queue.py retry ID
    python3 training_queue.py remove ID [--skip-if-running]

Every change goes through ``trainingd.queue.JobQueue`` (the only code that moves job files), so these
commands are safe while the daemon runs. Nothing is ever deleted: ``remove`` moves a pending job to
``queue/failed/`` with the reason "removed by user".
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from .cli import quiet_broken_pipe
from .controller import EXIT_ERROR, EXIT_OK, job_dict, send_request
from .paths import JOB_STATES, PRIORITIES, Home
from .queue import JobQueue, QueueError

EXIT_TABLE = """exit codes:
  0  ok
  1  error or refused (missing file, a folder, unknown id, running job, no daemon for --skip-if-running)
  2  usage error (bad command line)"""

HOME_HELP = "home folder (default: $TRAININGD_HOME, else the current directory)"


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
    q = JobQueue(home)
    q.ensure_dirs()
    job = q.add(src, priority=priority, source="cli", force=force)
    return {"job": job_dict(job), "message": f"queued {src.name} as {job.id} (priority {job.priority})"}


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


# --- formatting ------------------------------------------------------------------------------------

def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _when(value: Any) -> str:
    if not value:
        return "-"
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ")[:19]


def format_jobs(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("ID", "STATE", "PRIORITY", "NAME", "SIZE", "SHA256", "ENQUEUED", "REASON")]
    for j in jobs:
        reason = (j.get("reason") or "") if j.get("state") == "failed" else ""
        if j.get("broken") and j.get("state") != "failed":
            reason = f"{j['broken']}: the daemon will fail this job (data file kept)"
        rows.append((j["id"], j["state"], j.get("priority") or "-", j.get("original_name") or "-",
                     _size(j.get("size_bytes")), (j.get("sha256") or "-")[:12], _when(j.get("enqueued_at")),
                     reason.splitlines()[0] if reason else ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip() for r in rows)


def format_counts(c: dict[str, Any]) -> str:
    pending = c.get("pending") or {}
    lines = [f"pending     {sum(pending.values())}"]
    lines += [f"  {p:<9} {pending.get(p, 0)}" for p in PRIORITIES]
    lines += [f"{s:<11} {c.get(s, 0)}" for s in ("processing", "done", "failed")]
    return "\n".join(lines)


# --- argument parsing ------------------------------------------------------------------------------

def parser(prog: str = "training_queue.py") -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(prog=prog, description="Add, list, retry and remove training jobs.",
                                  epilog=EXIT_TABLE, formatter_class=fmt)
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, epilog=EXIT_TABLE, formatter_class=fmt)
        p.add_argument("--home", help=HOME_HELP)
        p.add_argument("--json", action="store_true", help="print the result as JSON")
        return p

    p = cmd("add", "copy a JSONL file into the queue")
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--priority", choices=PRIORITIES, default="normal")
    p.add_argument("--force", action="store_true", help="train it even if the same content was trained before")
    p = cmd("list", "list jobs (pending in claim order first)")
    p.add_argument("--state", choices=JOB_STATES, action="append", help="only this state (repeatable)")
    cmd("status", "count jobs per state and priority")
    p = cmd("retry", "move a failed job back to pending")
    p.add_argument("job_id", metavar="ID")
    p = cmd("remove", "move a pending job to failed/ (nothing is deleted)")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--skip-if-running", action="store_true",
                   help="if the job is being trained, ask the daemon to skip it instead of refusing")
    return top


@quiet_broken_pipe
def main(argv: list[str] | None = None, prog: str = "training_queue.py") -> int:
    args = parser(prog).parse_args(argv)
    home = Home.at(args.home)
    try:
        if args.command == "add":
            result = add(home, args.file, priority=args.priority, force=args.force)
        elif args.command == "list":
            result = list_jobs(home, args.state)
        elif args.command == "status":
            result = counts(home)
        elif args.command == "retry":
            result = retry(home, args.job_id)
        else:
            result = remove(home, args.job_id, skip_if_running=args.skip_if_running)
    except (CliError, QueueError) as e:
        if args.json:
            print(json.dumps({"ok": False, "error": str(e)}, indent=2))
        else:
            print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps({"ok": True, **result}, indent=2, default=str))
    elif args.command == "list":
        print(format_jobs(result["jobs"]))
    elif args.command == "status":
        print(format_counts(result["counts"]))
    else:
        print(result["message"])
    return EXIT_OK
