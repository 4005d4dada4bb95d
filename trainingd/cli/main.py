"""The controller's command lines as one argparse tree: ``trainingd`` and the seed's scripts that share it.

    trainingd [--home DIR] [--json] COMMAND ...      the console script; also ``python -m trainingd``
        init                                        create the runtime folders and a default config.json
        start [--once] [--max-jobs N]               the daemon in the background (= bin/launch_training_daemon.sh)
        daemon [--once] [--max-jobs N]              the daemon in the foreground (= training_daemon.py)
        train ...                                   = train.py (this process becomes the trainer)
        consolidate ...                             = consolidate_model.py
        logs [-f] [-n N]                            today's daemon log
        status [--watch]                            = training_controller.py status
        pause|resume|stop|skip [--wait [--timeout S]]   = training_controller.py pause|...
        queue add|list|status|retry|remove          = training_queue.py add|...
        validate [FILE]                             = config_validator.py
        monitor [--host H] [--port P]               = launch_live_monitor.py (the web monitor's server)
        generator [--host H] [--port P]             the SYLLO puzzle generator service (trainingd.generator)
        eval                                        evaluate the live adapter on the held-out set (its own process:
                                                    python -m trainingd.train.evaluate)
    training_controller.py, training_queue.py and config_validator.py are the same subcommands under
    their own names (``controller_main``, ``queue_main``, ``validator_main``).

``--home`` and ``--json`` work before or after the subcommand: the top parser declares them with real
defaults, and every subparser declares them again (through parent parsers) with ``default=SUPPRESS``, so a
subcommand that does not see the option leaves the value given before it alone (``trainingd.cli.tree``).

How it fits: each script's parser and ``trainingd``'s are built by the same ``add_*`` functions, from the
building blocks of ``trainingd.cli.tree``; the status, request, queue and validate leaves are here, the others in
the modules named after what they hold (``home``: init, start, logs, plan; ``services``: monitor, generator, node;
``processes``: daemon, train, consolidate, eval; ``lifecycle``: lineage, snapshots, presets...). Each leaf sets
``run`` to a function that calls a handler (``trainingd.cli.controller``, ``trainingd.cli.queue``,
``validate_config`` below...; each returns a dict), prints it as JSON or through ``trainingd.cli.formatting``,
and returns an exit code from ``trainingd.exit_codes``.

Not in this tree: the processes with their own parsers (the daemon, ``trainingd.daemon.loop``; the health check,
``trainingd.checks.health``; consolidation, ``trainingd.lifecycle.consolidate``; and the trainer's tools under
``trainingd.train``, run as ``python -m trainingd.train.<tool>``).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from trainingd import __version__
from trainingd import exit_codes as ec
from trainingd.config import LOCKABLE_KEYS, ConfigError, load_config, resolve_base_model, unenforced_locked_keys
from trainingd.cli.controller import DEFAULT_WAIT_TIMEOUT_S, send_request, status_summary
from trainingd.cli.formatting import (format_counts, format_jobs, format_summary, format_validation,
                                      format_watch_frame, print_json)
from trainingd.cli.home import (add_init_command, add_logs_command, add_plan_command, add_start_command, run_init,
                                run_logs, run_plan, run_start)
from trainingd.cli.processes import add_eval_command, add_pass_through_commands, pass_through, run_pass_through
from trainingd.cli.services import (MONITOR_EPILOG, MONITOR_TEXT, add_generator_command, add_monitor_arguments,
                                    add_monitor_command, add_node_command, run_monitor)
from trainingd.cli.tree import FORMATTER, leaf, quiet_broken_pipe, setup_logging, shared, subcommands, top
from trainingd.checks.health import add_doctor_arguments, run_doctor
from trainingd.paths import JOB_STATES, PRIORITIES, Home, resolve_home
from trainingd.jobqueue import QueueError
from trainingd.cli.queue import CliError, add, counts, list_jobs, remove, retry

REQUESTS = (("pause", "pause training after the current optimizer step (model stays loaded)"),
            ("resume", "resume a paused daemon"),
            ("stop", "checkpoint the current job, put it back at the head of its queue, exit"),
            ("skip", "abandon the current job (to queue/failed/, adapter unchanged)"))
NO_DAEMON_NOTE = ("With no daemon running, pause/resume/skip write nothing and exit 1; stop exits 0 (nothing to "
                  "stop).")


# --- the handler of validate (the others live in controller.py, queue.py, home.py...) -----------------

def validate_config(path: Path, home_root: Path) -> dict[str, Any]:
    """``{"ok", "path", "error", "base_model", "warnings"}``: parses the config and checks its base model exists.

    ``warnings`` are facts that do not make the config invalid, e.g. a ``locked_keys`` entry that locks nothing.
    """
    out: dict[str, Any] = {"ok": False, "path": str(path), "error": None, "base_model": None, "warnings": []}
    try:
        cfg = load_config(path)
        out["warnings"] = [f"locked_keys lists {key!r}, which is accepted and not enforced: only "
                           f"{', '.join(LOCKABLE_KEYS)} are locked (remove it from locked_keys)"
                           for key in unenforced_locked_keys(cfg)]
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


# --- what each leaf of the tree runs ---------------------------------------------------------------

def _run_status(args: argparse.Namespace) -> int:
    if args.json and args.watch:  # --json may come before the subcommand, out of reach of its group
        args.command_parser.error("argument --watch: not allowed with argument --json")
    home = Home.at(args.home)
    if args.watch:
        return _watch(home)
    summary = status_summary(home)
    if args.json:
        print_json({k: summary[k] for k in ("status", "queue", "counts", "daemon_running")})
    else:
        print(format_summary(summary))
    return ec.OK


def _watch(home: Home) -> int:
    try:
        while True:
            sys.stdout.write(format_watch_frame(status_summary(home), datetime.now()))
            sys.stdout.flush()
            time.sleep(1.0)
    except KeyboardInterrupt:
        print()
        return ec.OK


def _run_request(args: argparse.Namespace) -> int:
    if args.wait and args.timeout <= 0:
        print("--timeout must be positive", file=sys.stderr)
        return ec.USAGE
    result = send_request(Home.at(args.home), args.action, wait=args.wait, timeout_s=args.timeout)
    if args.json:
        print_json(result)
    else:
        print(result["message"], file=sys.stdout if result["ok"] else sys.stderr)
    return result["exit_code"]


def _run_queue(handler: Callable[[Home, argparse.Namespace], dict[str, Any]],
               text: Callable[[dict[str, Any]], str]) -> Callable[[argparse.Namespace], int]:
    """A queue leaf: refusals (and I/O errors) exit 1 with ``error: ...`` or ``{"ok": false, "error"}``."""
    def run(args: argparse.Namespace) -> int:
        try:
            result = handler(Home.at(args.home), args)
        except (CliError, QueueError, OSError) as e:
            if args.json:
                print_json({"ok": False, "error": str(e)})
            else:
                print(f"error: {e}", file=sys.stderr)
            return ec.ERROR
        if args.json:
            print_json({"ok": True, **result})
        else:
            print(text(result))
        return ec.OK
    return run


def _message(result: dict[str, Any]) -> str:
    return result["message"]


def _run_validate(args: argparse.Namespace) -> int:
    if args.file is not None and args.home is not None:
        args.command_parser.error("argument file: not allowed with argument --home")
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
        print_json(result)
    else:
        print(format_validation(result), file=sys.stdout if result["ok"] else sys.stderr)
    return ec.OK if result["ok"] else ec.CONFIG_ERROR


def add_controller_commands(sub: argparse._SubParsersAction) -> None:
    """status, pause, resume, stop, skip: ``training_controller.py`` and ``trainingd``."""
    epilog = ec.CONTROLLER_HELP
    p = leaf(sub, "status", "show state, job, progress, metrics and queue", epilog, _run_status, with_json=False)
    view = p.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help='print {"status": {...}, "queue": [pending, running and the newest 20 done and '
                           'failed jobs], "counts": {...}, "daemon_running": bool} as JSON')
    view.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")
    for action, text in REQUESTS:
        p = leaf(sub, action, text, NO_DAEMON_NOTE + "\n\n" + epilog, _run_request, action=action)
        p.add_argument("--wait", action="store_true", help="wait until the daemon acknowledges the request")
        p.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S, metavar="S",
                       help=f"with --wait: give up after S seconds, exit {ec.TIMEOUT} "
                            f"(default {DEFAULT_WAIT_TIMEOUT_S:g})")


def add_queue_commands(sub: argparse._SubParsersAction) -> None:
    """add, list, status, retry, remove: ``training_queue.py`` and ``trainingd queue``."""
    epilog = ec.QUEUE_HELP
    p = leaf(sub, "add", "copy a JSONL file into the queue", epilog, _run_queue(
        lambda home, a: add(home, a.file, priority=a.priority, force=a.force), _message))
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--priority", choices=PRIORITIES, default="normal")
    p.add_argument("--force", action="store_true", help="train it even if the same content was trained before")
    p = leaf(sub, "list", "list jobs (pending in claim order first)", epilog, _run_queue(
        lambda home, a: list_jobs(home, a.state), lambda r: format_jobs(r["jobs"])))
    p.add_argument("--state", choices=JOB_STATES, action="append", help="only this state (repeatable)")
    leaf(sub, "status", "count jobs per state and priority", epilog, _run_queue(
        lambda home, a: counts(home), lambda r: format_counts(r["counts"])))
    p = leaf(sub, "retry", "move a failed job back to pending", epilog, _run_queue(
        lambda home, a: retry(home, a.job_id), _message))
    p.add_argument("job_id", metavar="ID")
    p = leaf(sub, "remove", "move a pending job to failed/ (nothing is deleted)", epilog, _run_queue(
        lambda home, a: remove(home, a.job_id, skip_if_running=a.skip_if_running), _message))
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--skip-if-running", action="store_true",
                   help="if the job is being trained, ask the daemon to skip it instead of refusing")


VALIDATE_TEXT = "Check a trainingd config.json: every key known, every type right, the base model folder present."


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    """``config_validator.py`` and ``trainingd validate`` (``--home`` comes from the shared options)."""
    p.add_argument("file", nargs="?", type=Path, help="a config file (or a folder holding config.json); "
                                                      "without it, checks HOME/config.json")
    p.set_defaults(run=_run_validate, command_parser=p)


def controller_parser(prog: str = "training_controller.py") -> argparse.ArgumentParser:
    parser = top(prog, "Steer the training daemon of a home, or show its status.",
                  NO_DAEMON_NOTE + "\n\n" + ec.CONTROLLER_HELP)
    sub = subcommands(parser)
    add_controller_commands(sub)
    from trainingd.cli.lifecycle import add_history_command

    add_history_command(sub, leaf)
    return parser


def queue_parser(prog: str = "training_queue.py") -> argparse.ArgumentParser:
    parser = top(prog, "Add, list, retry and remove training jobs.", ec.QUEUE_HELP)
    add_queue_commands(subcommands(parser))
    return parser


def validator_parser(prog: str = "config_validator.py") -> argparse.ArgumentParser:
    parser = top(prog, VALIDATE_TEXT, ec.VALIDATOR_HELP)
    add_validate_arguments(parser)
    return parser



def trainingd_parser(prog: str = "trainingd") -> argparse.ArgumentParser:
    parser = top(prog, "Continuous LoRA/QLoRA fine-tuning from a folder.\n\nstatus, pause, resume, stop and skip "
                       "are training_controller.py's commands,\nqueue is training_queue.py, validate is "
                       "config_validator.py.", ec.TRAININGD_HELP)
    parser.add_argument("--version", action="version", version=f"trainingd {__version__}")
    sub = subcommands(parser)
    add_init_command(sub)
    add_start_command(sub)
    add_pass_through_commands(sub)  # parsed by their own scripts' parsers (see main)
    add_logs_command(sub)
    add_controller_commands(sub)
    text = "add, list, retry, remove jobs (training_queue.py)"
    queue = sub.add_parser("queue", help=text, description=text, epilog=ec.QUEUE_HELP,
                           parents=[shared("--home", True), shared("--json", True)], formatter_class=FORMATTER)
    add_queue_commands(queue.add_subparsers(dest="queue_command", required=True, metavar="COMMAND"))
    validate = leaf(sub, "validate", "check a config.json (config_validator.py)", ec.VALIDATOR_HELP, _run_validate)
    add_validate_arguments(validate)
    add_monitor_command(sub)
    from trainingd.cli.lifecycle import add_history_command, add_lifecycle_commands

    add_history_command(sub, leaf)
    add_lifecycle_commands(sub, leaf, shared)
    add_plan_command(sub)
    add_doctor_arguments(leaf(sub, "doctor", "check the home and say how to fix each problem "
                              "(comprehensive_health_check.py)", "Exit 0: healthy; 1: problems found.", run_doctor))
    add_generator_command(sub)
    add_eval_command(sub)
    add_node_command(sub)
    return parser


def monitor_parser(prog: str = "launch_live_monitor.py") -> argparse.ArgumentParser:
    parser = top(prog, MONITOR_TEXT[0].upper() + MONITOR_TEXT[1:] + ".", MONITOR_EPILOG, with_json=False)
    add_monitor_arguments(parser)
    return parser


# --- entry points ----------------------------------------------------------------------------------

def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    setup_logging()
    args = parser.parse_args(argv)
    # init, start (the daemon initialises its home) and plan (it builds the embedded base there) make a home; the
    # monitor and logs may look before the daemon that makes it (they only read).
    problem = home_problem(getattr(args, "home", None),
                           creates=args.run in (run_init, run_start, run_plan, run_monitor, run_logs))
    if problem:
        getattr(args, "command_parser", parser).error(problem)  # exit 2 (usage) with the message
    return args.run(args)


def home_problem(value: str | None, *, creates: bool = False) -> str | None:
    """Why ``--home value`` cannot be used (None: it can). Only a command that ``creates`` the home (init, start,
    plan) or only reads it (monitor, logs) may name a folder that does not exist yet: anything else would make a
    queue that no daemon reads."""
    if value is not None and not str(value).strip():
        return "argument --home: empty; give a folder (--home . for the current one)"
    try:
        root = resolve_home(value)
    except (OSError, RuntimeError) as e:
        return f"argument --home: {value!r} cannot be used: {e}"
    if root.exists() and not root.is_dir():
        return f"argument --home: {root} is a file, not a home folder"
    if not root.exists() and not creates:
        return f"argument --home: no such folder {root}; create a home first: trainingd init --home {root}"
    return None


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """``trainingd`` (the console script and ``python -m trainingd``)."""
    found = pass_through(sys.argv[1:] if argv is None else argv)
    if found is not None:
        return run_pass_through(*found)
    return _run(trainingd_parser(), argv)


@quiet_broken_pipe
def controller_main(argv: list[str] | None = None, prog: str = "training_controller.py") -> int:
    """``training_controller.py``."""
    return _run(controller_parser(prog), argv)


@quiet_broken_pipe
def queue_main(argv: list[str] | None = None, prog: str = "training_queue.py") -> int:
    """``training_queue.py``."""
    return _run(queue_parser(prog), argv)


def monitor_main(argv: list[str] | None = None, prog: str = "launch_live_monitor.py") -> int:
    """``launch_live_monitor.py [--home DIR] [--host H] [--port P]``."""
    return _run(monitor_parser(prog), argv)


@quiet_broken_pipe
def validator_main(argv: list[str] | None = None, prog: str = "config_validator.py") -> int:
    """``config_validator.py [--home DIR | FILE] [--json]``: exit 0 when valid, 3 with the reason when not."""
    return _run(validator_parser(prog), argv)
