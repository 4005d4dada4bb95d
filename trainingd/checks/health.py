"""Health of a home: every check returns what it found and, for a problem, the command that fixes it. Stdlib only.

    python3 comprehensive_health_check.py [--home DIR] [--json] [--min-free-gb N]    (also: trainingd doctor)
    python3 state_tracker.py [--home DIR] --check [--json]

``run_checks`` is the health check (exit 1 when any check fails); ``consistency`` compares the queue, the status
file and the checkpoints with each other (``state_tracker.py --check``). Each result is a dict
``{"check", "ok", "detail", "problems": [{"problem", "fix"}]}``; the CLI formats them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from trainingd.config import ConfigError, load_config, resolve_base_model
from trainingd.contracts.checkpoint import ADAPTER_FILES
from trainingd.contracts.manifest import FILE as MANIFEST
from trainingd.contracts.manifest import read_manifest
from trainingd.contracts.status import load_status
from trainingd.instance import is_daemon_running, pid_alive, read_pid
from trainingd.checks.invariants import check_home, job_locations, temp_files
from trainingd.paths import Home

MIN_FREE_GB = 2.0
STATUS_STALE_S = 120.0


def _q(path: Path | str) -> str:
    return shlex.quote(str(path))


def _result(check: str, problems: list[tuple[str, str]], detail: str = "") -> dict[str, Any]:
    return {"check": check, "ok": not problems, "detail": detail,
            "problems": [{"problem": p, "fix": f} for p, f in problems]}


def _start(home: Home) -> str:
    return f"bin/launch_training_daemon.sh --home {_q(home.root)}"


# ------------------------------------------------------------------------------------------------ checks
def check_config(home: Home) -> dict[str, Any]:
    try:
        load_config(home.config)
    except ConfigError as e:
        fix = f"edit {_q(home.config)}, then: python3 config_validator.py --home {_q(home.root)}"
        return _result("config", [(f"config.json is invalid: {e}", fix)])
    except FileNotFoundError:
        return _result("config", [("config.json is missing", f"trainingd init --home {_q(home.root)}")])
    return _result("config", [], "config.json is valid")


def check_folders(home: Home) -> dict[str, Any]:
    problems = []
    missing = [f for f in [*home.runtime_dirs(), home.incoming] if not f.exists()]
    if missing:
        problems.append((f"{len(missing)} folder(s) missing: " + ", ".join(f"{f.relative_to(home.root)}/"
                                                                          for f in missing),
                         f"trainingd init --home {_q(home.root)}"))
    for folder in [*home.runtime_dirs(), home.incoming]:
        if not folder.exists():
            continue
        elif not folder.is_dir():
            problems.append((f"{folder.relative_to(home.root)} is not a folder",
                             f"mv {_q(folder)} {_q(str(folder) + '.moved')} && trainingd init --home {_q(home.root)}"))
        elif not os.access(folder, os.W_OK | os.X_OK):
            problems.append((f"{folder.relative_to(home.root)}/ is not writable", f"chmod u+rwx {_q(folder)}"))
    return _result("folders", problems, "every runtime folder is present and writable")


def check_disk(home: Home, min_free_gb: float = MIN_FREE_GB) -> dict[str, Any]:
    where = home.root
    while not where.exists():  # a home not made yet: the filesystem it would be on
        where = where.parent
    usage = shutil.disk_usage(where)
    free_gb = usage.free / 2**30
    detail = f"{free_gb:.1f} GiB free of {usage.total / 2**30:.1f} GiB"
    if free_gb < min_free_gb:
        return _result("disk", [(f"only {detail} (want at least {min_free_gb:g} GiB for checkpoints and adapters)",
                                 f"free space on the filesystem of {home.root}, e.g. du -sh {_q(home.snapshots)} "
                                 f"{_q(home.consolidated_models)} {_q(home.cache)} and remove what is not needed")],
                       detail)
    return _result("disk", [], detail)


def check_base_model(home: Home) -> dict[str, Any]:
    try:
        cfg = load_config(home.config)
    except (ConfigError, OSError):
        return _result("base_model", [], "not checked (config.json is invalid)")
    try:
        ref = resolve_base_model(cfg, home.root)
    except ConfigError as e:
        return _result("base_model", [(f"base model {cfg.base_model!r} cannot be used: {e}",
                                       f"set base_model in {_q(home.config)} to a model folder, then: "
                                       f"python3 config_validator.py --home {_q(home.root)}")])
    path = ref.path
    if ref.kind == "folder" and path is not None:
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or any(path.glob("*.gguf"))
        if not (path / "config.json").is_file() or not has_weights:
            return _result("base_model", [(f"{path} has no config.json or no weight files",
                                           f"copy the complete model into {_q(path)} (config.json, tokenizer, "
                                           f"*.safetensors) or point base_model elsewhere")])
    return _result("base_model", [], ref.describe())


def check_daemon(home: Home) -> dict[str, Any]:
    running = is_daemon_running(home)
    pid = read_pid(home)
    problems = []
    if running and pid is None:
        problems.append(("a daemon holds .daemon.lock but .daemon.pid is missing",
                         f"find it with: fuser {_q(home.lock)}; stop it (kill -TERM PID) and start it again: "
                         f"{_start(home)}"))
    elif not running and pid is not None:
        alive = pid_alive(pid)
        what = f"pid {pid} is {'a live, unrelated process' if alive else 'not running'}"
        problems.append((f"stale .daemon.pid: no daemon holds the lock ({what})", f"rm {_q(home.pid)}"))
    detail = f"running (pid {pid})" if running else "not running"
    return _result("daemon", problems, detail)


def check_status(home: Home) -> dict[str, Any]:
    running = is_daemon_running(home)
    try:
        doc = load_status(home)
    except FileNotFoundError:
        if running:
            return _result("status", [("the daemon runs but has written no status file",
                                       f"look at {_q(home.daemon_log)}")])
        return _result("status", [], "no status yet (the daemon has not run)")
    except (OSError, ValueError) as e:
        return _result("status", [(f"status/training_status.json does not parse: {e}",
                                   f"rm {_q(home.status)} (the daemon writes a new one every tick)")])
    state = doc.get("status") if isinstance(doc, dict) else None
    age = _age_s(doc.get("updated_at") if isinstance(doc, dict) else None)
    detail = f"{state}, updated {age:.0f}s ago" if age is not None else str(state)
    if running and age is not None and age > STATUS_STALE_S:
        pid = read_pid(home)
        return _result("status", [(f"the daemon runs but its status is {age:.0f}s old: it may be hung",
                                   f"kill -TERM {pid}; then {_start(home)}")], detail)
    held = doc.get("condition") if isinstance(doc, dict) else None
    if running and isinstance(held, dict) and held.get("message"):
        # A condition of the whole home holds every job: the queue cannot move until a person acts (invariant 9).
        ways_out = [str(w) for w in held.get("ways_out") or []]
        return _result("status", [(f"the daemon is held: {held['message']}",
                                   "; ".join(ways_out) or f"look at {_q(home.daemon_log)}")], detail)
    if not running and state not in (None, "stopped", "error", "idle"):
        return _result("status", [(f"status says {state!r} but no daemon is running (it was killed or crashed)",
                                   _start(home))], detail)
    return _result("status", [], detail)


def _age_s(stamp: Any) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        t = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return (datetime.now(timezone.utc) - t).total_seconds()


def liveness_problems(home: Home) -> list[tuple[str, str]]:
    """What a running daemon's status says is stuck: a queue head that has not moved while idle (``liveness``) and
    each subsystem that fails on every tick (``faults``), each with its fix. Nothing when no daemon runs."""
    if not is_daemon_running(home):
        return []
    try:
        doc = load_status(home)
    except (OSError, ValueError):
        return []  # check_status reports it
    if not isinstance(doc, dict):
        return []
    problems = []
    live = doc.get("liveness")
    if isinstance(live, dict) and live.get("stalled"):
        problems.append((str(live.get("problem") or f"the head of the queue (job {live.get('head')}) has not moved"),
                         str(live.get("fix") or f"look at {_q(home.daemon_log)}")))
    for fault in doc.get("faults") or []:
        if isinstance(fault, dict):
            where = f" ({fault['path']})" if fault.get("path") else ""
            problems.append((f"the daemon's {fault.get('subsystem')} fails on every tick: {fault.get('message')}"
                             f"{where}", str(fault.get("fix") or f"look at {_q(home.daemon_log)}")))
    return problems


def check_liveness(home: Home) -> dict[str, Any]:
    problems = liveness_problems(home)
    return _result("liveness", problems, "the queue moves; no subsystem of the daemon fails"
                   if is_daemon_running(home) else "not checked (no daemon runs)")


def check_stuck_jobs(home: Home) -> dict[str, Any]:
    processing = [j for j, places in job_locations(home).items() if "processing" in places]
    if processing and not is_daemon_running(home):
        return _result("processing", [(f"job(s) {', '.join(processing)} in processing/ with no daemon or trainer",
                                       f"start the daemon, it resumes them first: {_start(home)}")])
    if len(processing) > 1:
        return _result("processing", [(f"{len(processing)} jobs in processing/ ({', '.join(processing)})",
                                       f"stop the daemon (training_controller.py --home {_q(home.root)} stop), "
                                       "then start it again: it resumes them one after another")])
    return _result("processing", [], f"{len(processing)} job(s) in processing/")


def check_temp_files(home: Home) -> dict[str, Any]:
    if is_daemon_running(home):
        return _result("temp_files", [], "not checked while the daemon runs (it sweeps them at start-up)")
    found = temp_files(home)
    if found:
        names = " ".join(_q(p) for p in found[:20])
        return _result("temp_files", [(f"{len(found)} temp file(s) left by interrupted writes: "
                                       + ", ".join(str(p.relative_to(home.root)) for p in found[:5]),
                                       f"start the daemon (it removes them at start-up): {_start(home)}; "
                                       f"or: rm -rf {names}")])
    return _result("temp_files", [], "none")


def check_checkpoints(home: Home) -> dict[str, Any]:
    problems = []
    where = job_locations(home)
    count = 0
    folders = sorted(p for p in home.checkpoints.iterdir() if p.is_dir()) if home.checkpoints.is_dir() else []
    for job_dir in folders:
        if job_dir.name.startswith("."):
            continue
        places = where.get(job_dir.name, [])
        # A failed job's checkpoints are what `training_queue.py retry` resumes from: kept, never advised away.
        resumable = any(p == "processing" or p.startswith("pending") for p in places) or places == ["failed"]
        if not resumable:
            state = places[0] if places else "not in the queue"
            problems.append((f"checkpoints of job {job_dir.name}, which is {state}, are still kept",
                             f"rm -r {_q(job_dir)}"))
        for step in sorted(job_dir.glob("step-*")):
            count += 1
            if not (step / "COMPLETE").is_file():
                continue  # never counted; pruned at the next save
            missing = [n for n in (MANIFEST, *ADAPTER_FILES) if not (step / n).is_file()]
            bad = missing or not _manifest_ok(step)
            if bad:
                problems.append((f"checkpoint {step.relative_to(home.root)} is marked COMPLETE but "
                                 + (f"lacks {', '.join(missing)}" if missing else "its manifest is unreadable"),
                                 f"rm -r {_q(step)} (the job resumes from an older checkpoint or from the start)"))
    return _result("checkpoints", problems, f"{count} checkpoint folder(s)")


def _manifest_ok(step: Path) -> bool:
    try:
        doc = read_manifest(step)
    except (OSError, ValueError):
        return False
    return bool(doc.get("job_id"))


def check_gpu(home: Home) -> dict[str, Any]:  # noqa: ARG001 - same signature as the others
    """Informational: no GPU is not a problem (training runs on the CPU)."""
    try:
        import pynvml
    except ImportError:
        return _result("gpu", [], "nvidia-ml-py not installed; training uses the CPU")
    try:
        pynvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVML raises its own error types
        return _result("gpu", [], f"no GPU visible ({e}); training uses the CPU")
    try:
        parts = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            parts.append(f"{i}: {name if isinstance(name, str) else name.decode()} "
                         f"{mem.free / 2**30:.1f} of {mem.total / 2**30:.1f} GiB free")
        return _result("gpu", [], "; ".join(parts) or "no GPU visible; training uses the CPU")
    finally:
        pynvml.nvmlShutdown()


def check_invariants(home: Home) -> dict[str, Any]:
    problems = check_home(home, idle=not is_daemon_running(home), require_status=False)
    fix = f"python3 state_tracker.py --home {_q(home.root)} --check (details); then see docs on the queue folders"
    ignore = ("temp file left behind", "still in processing/")  # reported by their own checks with their fix
    return _result("invariants", [(p, fix) for p in problems if not p.startswith(ignore) and "processing/" not in p],
                   "queue, adapter and status agree")


CHECKS: list[Callable[[Home], dict[str, Any]]] = [
    check_config, check_folders, check_disk, check_base_model, check_daemon, check_status, check_liveness,
    check_stuck_jobs,
    check_temp_files, check_checkpoints, check_invariants, check_gpu]


def run_checks(home: Home, *, min_free_gb: float = MIN_FREE_GB) -> dict[str, Any]:
    results = []
    for check in CHECKS:
        try:
            results.append(check_disk(home, min_free_gb) if check is check_disk else check(home))
        except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
            results.append(_result(check.__name__.removeprefix("check_"),
                                   [(f"the check itself failed: {type(e).__name__}: {e}", "report this as a bug")]))
    return {"home": str(home.root), "ok": all(r["ok"] for r in results), "checks": results}


# ------------------------------------------------------------------------------------------------ consistency
def consistency(home: Home) -> dict[str, Any]:
    """Queue versus status versus checkpoints (``state_tracker.py --check``)."""
    running = is_daemon_running(home)
    problems = [(p, "see the queue folders; the folders are the truth") for p in
                check_home(home, idle=not running, require_status=False)]
    where = job_locations(home)
    counts = {"processing": 0, "done": 0, "failed": 0, "pending": 0}
    for places in where.values():
        for place in places:
            counts[place.split("/")[0]] += 1
    try:
        doc = load_status(home)
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, dict) and not running:
        queue = doc.get("queue") or {}
        shown = {"processing": queue.get("processing"), "done": queue.get("done"), "failed": queue.get("failed"),
                 "pending": sum((queue.get("pending") or {}).values()) if isinstance(queue.get("pending"), dict)
                 else None}
        for key, n in counts.items():
            if shown[key] is not None and shown[key] != n:
                problems.append((f"status shows {shown[key]} {key} job(s), the queue holds {n}",
                                 f"start the daemon to rewrite the status: {_start(home)}"))
        job = doc.get("job") or {}
        if isinstance(job, dict) and job.get("id") and "processing" not in where.get(job["id"], []):
            problems.append((f"status shows job {job['id']} training but it is "
                             f"{(where.get(job['id']) or ['not in the queue'])[0]}",
                             f"start the daemon to rewrite the status: {_start(home)}"))
    for p in check_checkpoints(home)["problems"]:
        problems.append((p["problem"], p["fix"]))
    problems += liveness_problems(home)
    return {"home": str(home.root), "ok": not problems, "queue": counts,
            "problems": [{"problem": p, "fix": f} for p, f in problems]}


def format_report(report: dict[str, Any]) -> str:
    lines = [f"home: {report['home']}"]
    for r in report.get("checks", []):
        detail = f": {r['detail']}" if r["ok"] and r["detail"] else ""
        lines.append(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}{detail}")
        for p in r["problems"]:
            lines.append(f"     problem: {p['problem']}")
            lines.append(f"     fix:     {p['fix']}")
    for p in report.get("problems", []) if "checks" not in report else []:
        lines.append(f"FAIL {p['problem']}")
        lines.append(f"     fix: {p['fix']}")
    lines.append("healthy" if report["ok"] else "problems found")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ command lines
def add_doctor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--min-free-gb", type=float, default=MIN_FREE_GB, metavar="N",
                   help=f"free disk below this is a problem (default {MIN_FREE_GB:g})")


def run_doctor(args: argparse.Namespace) -> int:
    report = run_checks(Home.at(args.home), min_free_gb=args.min_free_gb)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


def health_main(argv: list[str] | None = None, prog: str = "comprehensive_health_check.py") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Check a trainingd home: config, folders, disk, base model, "
                                "daemon lock and pid file, status freshness, stuck jobs, temp files, checkpoints, "
                                "the queue's invariants, GPU. Each problem comes with the command that fixes it.",
                                epilog="Exit 0: healthy; 1: problems found.")
    p.add_argument("--home", metavar="DIR", help="home folder (default: $TRAININGD_HOME, else the current directory)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_doctor_arguments(p)
    return run_doctor(p.parse_args(argv))


def state_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="state_tracker.py", description="Show where every job of a home is; with "
                                "--check, compare the queue, the status file and the checkpoints.",
                                epilog="Exit 0: consistent (or no --check); 1: inconsistencies found.")
    p.add_argument("--home", metavar="DIR", help="home folder (default: $TRAININGD_HOME, else the current directory)")
    p.add_argument("--check", action="store_true", help="check consistency; exit 1 on any problem")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    home = Home.at(args.home)
    if not args.check:
        jobs = {job_id: places for job_id, places in sorted(job_locations(home).items())}
        print(json.dumps(jobs, indent=2) if args.json else
              "\n".join(f"{job_id}  {' + '.join(places)}" for job_id, places in jobs.items()) or "no jobs")
        return 0
    report = consistency(home)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if report["ok"] else 1


__all__ = ["run_checks", "consistency", "format_report", "CHECKS", "MIN_FREE_GB", "health_main", "state_main",
           "add_doctor_arguments", "run_doctor"]
