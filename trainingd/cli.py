"""Command-line entry points: ``trainingd`` (console script / ``python -m trainingd``), and the logic behind
``training_controller.py`` and ``config_validator.py``.

    trainingd init [--home DIR]                    create the runtime folders and a default config.json
    trainingd status [--json | --watch]            same as training_controller.py status
    trainingd pause|resume|stop|skip [--wait]      same as training_controller.py
    trainingd queue add|list|status|retry|remove   same as training_queue.py
    trainingd validate [--home DIR | FILE]         same as config_validator.py

Handlers return dicts (``trainingd.controller``, ``trainingd.queue_cli``); this module only parses
arguments and formats. ``--json`` prints the handler's dict.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from . import __version__
from .config import ConfigError, load_config, resolve_base_model
from .controller import (DEFAULT_WAIT_TIMEOUT_S, EXIT_CONFIG, EXIT_ERROR, EXIT_OK, send_request,
                         status_summary)
from .paths import PRIORITIES, Home

EXIT_TABLE = """exit codes:
  0  ok
  1  error or refused (bad input, unknown id, no daemon running)
  2  usage error (bad command line)
  3  config error (config.json invalid or base model missing)
  4  timeout (--wait: the daemon did not acknowledge in time)"""

HOME_HELP = "home folder (default: $TRAININGD_HOME, else the current directory)"


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def quiet_broken_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """``tool | head`` closing the pipe early is not an error: exit quietly (as the coreutils do)."""
    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except BrokenPipeError:
            # Python would complain again while flushing stdout at exit; point it at /dev/null first.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
    return wrapper


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- formatting of the status summary -------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def progress_bar(fraction: float | None, width: int = 30) -> str:
    if fraction is None:
        return "[" + "?" * width + "]"
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def _num(value: Any, fmt: str = "") -> str:
    if value is None:
        return "-"
    if not fmt and isinstance(value, float) and value.is_integer():
        value = int(value)  # counters (step, epoch) may arrive as JSON floats
    return format(value, fmt)


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable view of ``controller.status_summary``."""
    st = summary.get("status") or {}
    lines = [f"home:      {summary.get('home')}"]
    daemon = st.get("daemon") or {}
    if summary.get("daemon_running"):
        lines.append(f"daemon:    running (pid {daemon.get('pid', '?')}, version {daemon.get('version', '?')})")
    else:
        lines.append("daemon:    daemon not running" + (" (last known status below)" if st else ""))
    if not st:
        lines.append("status:    no status file yet")
    else:
        state = st.get("status") or "unknown"
        detail = st.get("status_detail")
        lines.append(f"state:     {state}" + (f" - {detail}" if detail else ""))
        job = st.get("job")
        if job:
            lines.append(f"job:       {job.get('id')}  file {job.get('file')}  priority {job.get('priority')}")
            step, total = job.get("step"), job.get("total_steps")
            fraction = job.get("progress")
            if fraction is None and step is not None and total:
                fraction = step / total
            lines.append(f"progress:  {progress_bar(fraction)}  step {_num(step)}/{_num(total)}"
                         f"  epoch {_num(job.get('epoch'))}")
        m = st.get("metrics") or {}
        lines.append(f"loss:      {_num(m.get('loss'), '.4f')} (ema {_num(m.get('loss_ema'), '.4f')})"
                     f"  eval {_num(m.get('eval_loss'), '.4f')}  lr {_num(m.get('learning_rate'), '.2e')}")
        lines.append(f"speed:     {_num(m.get('tokens_per_s'), '.0f')} tokens/s"
                     f"  {_num(m.get('seconds_per_step'), '.2f')} s/step  ETA {format_duration(m.get('eta_seconds'))}")
        prep = st.get("prepare")
        if prep:
            lines.append(f"prepare:   {prep.get('phase')} {_num(prep.get('lines_done'))}"
                         f"/{_num(prep.get('lines_total'))} lines")
        control = st.get("control") or {}
        lines.append(f"paused:    {'yes' if control.get('paused') else 'no'}"
                     + ("  (stopping)" if control.get("stopping") else ""))
        err = st.get("last_error")
        if err:
            lines.append(f"last error: {err.get('message')} (job {err.get('job_id')}, {err.get('at')})")
        lines.append(f"updated:   {st.get('updated_at')} (seq {st.get('seq')})")
    lines.append("queue:     " + _format_queue_counts(summary))
    return "\n".join(lines)


def _format_queue_counts(summary: dict[str, Any]) -> str:
    counts = {"high": 0, "normal": 0, "low": 0, "processing": 0, "done": 0, "failed": 0}
    for job in summary.get("queue") or []:
        key = job.get("priority") if job.get("state") == "pending" else job.get("state")
        if key in counts:
            counts[key] += 1
    pending = sum(counts[p] for p in PRIORITIES)
    by_priority = ", ".join(f"{p} {counts[p]}" for p in PRIORITIES)
    return (f"pending {pending} ({by_priority})  processing {counts['processing']}  done {counts['done']}"
            f"  failed {counts['failed']}")


# --- training_controller.py ------------------------------------------------------------------------

def controller_parser(prog: str = "training_controller.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Steer the training daemon of a home, or show its status.",
        epilog=EXIT_TABLE + "\n\nWith no daemon running, pause/resume/skip write nothing and exit 1; "
               "stop exits 0 (nothing to stop).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for action, text in (("pause", "pause training after the current optimizer step (model stays loaded)"),
                         ("resume", "resume a paused daemon"),
                         ("stop", "checkpoint the current job, put it back at the head of its queue, exit"),
                         ("skip", "abandon the current job (to queue/failed/, adapter unchanged)")):
        p = sub.add_parser(action, help=text, description=text, epilog=EXIT_TABLE,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--home", help=HOME_HELP)
        p.add_argument("--wait", action="store_true", help="wait until the daemon acknowledges the request")
        p.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S, metavar="S",
                       help=f"with --wait: give up after S seconds, exit 4 (default {DEFAULT_WAIT_TIMEOUT_S:g})")
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    p = sub.add_parser("status", help="show state, job, progress, metrics and queue",
                       epilog=EXIT_TABLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", help=HOME_HELP)
    view = p.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true",
                      help='print {"status": {...}, "queue": [...], "daemon_running": bool} as JSON')
    view.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")
    return parser


@quiet_broken_pipe
def controller_main(argv: list[str] | None = None, prog: str = "training_controller.py") -> int:
    """``training_controller.py``: see ``controller_parser``."""
    _setup_logging()
    args = controller_parser(prog).parse_args(argv)
    home = Home.at(args.home)
    if args.command == "status":
        if args.watch:
            return _watch(home)
        summary = status_summary(home)
        if args.json:
            _print_json({k: summary[k] for k in ("status", "queue", "daemon_running")})
        else:
            print(format_summary(summary))
        return EXIT_OK
    if args.wait and args.timeout <= 0:
        print("--timeout must be positive", file=sys.stderr)
        return 2
    result = send_request(home, args.command, wait=args.wait, timeout_s=args.timeout)
    if args.json:
        _print_json(result)
    else:
        print(result["message"], file=sys.stdout if result["ok"] else sys.stderr)
    return result["exit_code"]


def _watch(home: Home) -> int:
    try:
        while True:
            text = format_summary(status_summary(home))
            sys.stdout.write("\033[2J\033[H" + text + f"\n\n(refreshed {datetime.now():%H:%M:%S}; Ctrl-C quits)\n")
            sys.stdout.flush()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print()
        return EXIT_OK


# --- config_validator.py ---------------------------------------------------------------------------

def validate_config(path: Path, home_root: Path) -> dict[str, Any]:
    """``{"ok", "path", "error", "base_model"}``: parses the config and checks its base model exists."""
    out: dict[str, Any] = {"ok": False, "path": str(path), "error": None, "base_model": None}
    try:
        cfg = load_config(path)
        out["base_model"] = resolve_base_model(cfg, home_root).describe()
    except ConfigError as e:
        out["error"] = str(e)
        return out
    except OSError as e:
        out["error"] = f"{path}: cannot read: {e.strerror or e}"
        return out
    out["ok"] = True
    out["defaults"] = not path.exists()
    return out


@quiet_broken_pipe
def validator_main(argv: list[str] | None = None, prog: str = "config_validator.py") -> int:
    """``config_validator.py [--home DIR | FILE] [--json]``: exit 0 when valid, 3 with the reason when not."""
    _setup_logging()
    parser = argparse.ArgumentParser(
        prog=prog, description="Check a trainingd config.json: every key known, every type right, the base "
                               "model folder present.",
        epilog=EXIT_TABLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--home", help=HOME_HELP + "; checks HOME/config.json")
    where.add_argument("file", nargs="?", type=Path, help="a config file (or a folder holding config.json)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.file is not None:
        path = args.file.expanduser().resolve()
        if path.is_dir():
            path = path / "config.json"
        result = (validate_config(path, path.parent) if path.exists() else
                  {"ok": False, "path": str(path), "error": f"{path}: no such file", "base_model": None})
    else:
        home = Home.at(args.home)
        result = validate_config(home.config, home.root)
    if args.json:
        _print_json(result)
    elif result["ok"]:
        note = " (no config.json: defaults)" if result.get("defaults") else ""
        print(f"ok: {result['path']}{note}")
    else:
        print(result["error"], file=sys.stderr)
    return EXIT_OK if result["ok"] else EXIT_CONFIG


# --- trainingd init / dispatch ----------------------------------------------------------------------

def init_home(home: Home) -> dict[str, Any]:
    """Initialise a home with the daemon's own ``init_home`` (one definition of a home's layout).

    What was created is measured around the call, so the report says exactly what changed.
    """
    from .instance import init_home as _init

    before = {str(d) for d in home.runtime_dirs() if d.is_dir()}
    had_config = home.config.exists()
    _init(home)
    created = [str(d) for d in home.runtime_dirs() if d.is_dir() and str(d) not in before]
    return {"home": str(home.root), "created": created,
            "config": "kept" if had_config else ("written" if home.config.exists() else "missing")}


COMMANDS = """commands:
  init                              create the runtime folders and a default config.json
  status [--json | --watch]         show the daemon's status (training_controller.py status)
  pause | resume | stop | skip      steer the daemon (training_controller.py)
  queue add|list|status|retry|remove  manage the job queue (training_queue.py)
  validate [--home DIR | FILE]      check a config.json (config_validator.py)"""


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """The ``trainingd`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("status", "pause", "resume", "stop", "skip"):
        return controller_main(argv, prog="trainingd")
    if argv and argv[0] == "queue":
        from .queue_cli import main as queue_main

        return queue_main(argv[1:], prog="trainingd queue")
    if argv and argv[0] == "validate":
        return validator_main(argv[1:], prog="trainingd validate")
    _setup_logging()
    parser = argparse.ArgumentParser(prog="trainingd", description="Continuous LoRA/QLoRA fine-tuning from a folder.",
                                     epilog=COMMANDS + "\n\n" + EXIT_TABLE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"trainingd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("init", help="create the runtime folders and a default config.json (kept if present)",
                       epilog=EXIT_TABLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", help=HOME_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    # Listed for --help only: main() hands these to their own parsers before this one runs.
    for name, text in (("status", "show the daemon's status (--json, --watch)"),
                       ("pause", "pause training"), ("resume", "resume training"),
                       ("stop", "checkpoint, requeue the job and stop the daemon"),
                       ("skip", "abandon the current job"), ("queue", "add, list, retry, remove jobs"),
                       ("validate", "check a config.json")):
        sub.add_parser(name, help=text + f" (trainingd {name} --help)", add_help=False)
    args = parser.parse_args(argv)
    home = Home.at(args.home)
    try:
        result = init_home(home)
    except OSError as e:
        print(f"cannot initialise {home.root}: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        _print_json(result)
        return EXIT_OK
    print(f"initialised {result['home']}")
    for folder in result["created"]:
        print(f"  created {folder}")
    if result["config"] == "written":
        print(f"  wrote default config {home.config}")
    else:
        print(f"  kept existing config {home.config}")
    return EXIT_OK
