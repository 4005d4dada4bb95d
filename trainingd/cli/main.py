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
subcommand that does not see the option leaves the value given before it alone.

How it fits: each script's parser and ``trainingd``'s are built by the same ``add_*_commands`` functions;
each leaf sets ``run`` to a function here that calls a handler (``trainingd.cli.controller``,
``trainingd.cli.queue``, or ``initialise``/``validate_config`` below; each returns a dict), prints it as JSON
or through ``trainingd.cli.formatting``, and returns an exit code from ``trainingd.exit_codes``.

Not in this tree: the processes with their own parsers (the daemon, ``trainingd.daemon.loop``; the health check,
``trainingd.checks.health``; consolidation, ``trainingd.lifecycle.consolidate``; and the trainer's tools under
``trainingd.train``, run as ``python -m trainingd.train.<tool>``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from trainingd import __version__
from trainingd import exit_codes as ec
from trainingd.config import LOCKABLE_KEYS, ConfigError, load_config, resolve_base_model, unenforced_locked_keys
from trainingd.cli.controller import DEFAULT_WAIT_TIMEOUT_S, send_request, status_summary
from trainingd.cli.formatting import (format_counts, format_init, format_jobs, format_summary, format_validation,
                         format_watch_frame, print_json)
from trainingd.checks.health import add_doctor_arguments, run_doctor
from trainingd.instance import init_home
from trainingd.paths import JOB_STATES, PRIORITIES, Home, resolve_home
from trainingd.jobqueue import QueueError
from trainingd.cli.queue import CliError, add, counts, list_jobs, remove, retry

HOME_HELP = "home folder (default: $TRAININGD_HOME, else the current directory)"
JSON_HELP = "print the result as JSON"
FORMATTER = argparse.RawDescriptionHelpFormatter


class TopFormatter(FORMATTER):
    """The top of each tree: every command's help in one line beside its name, whatever the terminal says.

    argparse measures a command's name without the extra indent it prints it with, so a long name
    (``consolidate``) would push its help onto the next line; the width counts that indent here.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=120, max_help_position=24)

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS and isinstance(action, argparse._SubParsersAction):
            longest = max((len(name) for name in action.choices), default=0)
            self._action_max_length = max(self._action_max_length, longest + self._current_indent + 2)


TOP_FORMATTER = TopFormatter
REQUESTS = (("pause", "pause training after the current optimizer step (model stays loaded)"),
            ("resume", "resume a paused daemon"),
            ("stop", "checkpoint the current job, put it back at the head of its queue, exit"),
            ("skip", "abandon the current job (to queue/failed/, adapter unchanged)"))
NO_DAEMON_NOTE = ("With no daemon running, pause/resume/skip write nothing and exit 1; stop exits 0 (nothing to "
                  "stop).")


def one_line(text: str, limit: int = 100) -> str:
    """A command's line in ``trainingd --help``: its help, cut before the first "(" or ";" when it is long."""
    if len(text) <= limit:
        return text
    cuts = [i for i in (text.find(" ("), text.find("; ")) if i > 0]
    return text[:min(cuts)] if cuts else text


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
            return ec.OK
    return wrapper


# --- handlers of init and validate (the others live in controller.py and queue_cli.py) --------------

def initialise(home: Home) -> dict[str, Any]:
    """Initialise a home with the daemon's own ``init_home`` (one definition of a home's layout).

    What was created is measured around the call, so the report says exactly what changed.
    """
    before = {str(d) for d in home.runtime_dirs() if d.is_dir()}
    had_config = home.config.exists()
    init_home(home)
    created = [str(d) for d in home.runtime_dirs() if d.is_dir() and str(d) not in before]
    return {"home": str(home.root), "created": created, "config_path": str(home.config),
            "config": "kept" if had_config else ("written" if home.config.exists() else "missing")}


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

def _run_init(args: argparse.Namespace) -> int:
    home = Home.at(args.home)
    try:
        result = initialise(home)
    except OSError as e:
        print(f"cannot initialise {home.root}: {e}", file=sys.stderr)
        return ec.ERROR
    if args.json:
        print_json(result)
    else:
        print(format_init(result))
    return ec.OK


def _run_status(args: argparse.Namespace) -> int:
    if args.json and args.watch:  # --json may come before the subcommand, out of reach of its group
        args.command_parser.error("argument --watch: not allowed with argument --json")
    home = Home.at(args.home)
    if args.watch:
        return _watch(home)
    summary = status_summary(home)
    if args.json:
        print_json({k: summary[k] for k in ("status", "queue", "daemon_running")})
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


def _run_plan(args: argparse.Namespace) -> int:
    """``trainingd plan``: the memory estimate of the configured run (stdlib only; no device time)."""
    from trainingd.config import ConfigError, load_config, resolve_base_model
    from trainingd.checks.memory_plan import format_plan, plan

    home = Home.at(args.home)
    try:
        cfg = load_config(home.config)
        ref = resolve_base_model(cfg, home.root)
    except ConfigError as e:
        print(f"trainingd plan: {e}", file=sys.stderr)
        return ec.CONFIG_ERROR
    model_dir = ref.path
    if ref.kind == "embedded":  # a fresh home: build it now, as the first training run would (once)
        from trainingd.models import embedded

        try:
            model_dir = embedded.build_in_subprocess(embedded.lookup(ref.base), ref.path.parent)
        except embedded.EmbeddedError as e:
            print(f"trainingd plan: {e}", file=sys.stderr)
            return ec.CONFIG_ERROR
    if model_dir is None or not (Path(model_dir) / "config.json").is_file():
        print(f"trainingd plan: the base model {cfg.base_model} is not on disk yet (the first training run "
              "fetches it)", file=sys.stderr)
        return ec.CONFIG_ERROR
    result = plan(cfg, Path(model_dir))
    if args.json:
        print_json(result)
    else:
        print(format_plan(result))
    return ec.OK if all(d["fits"] for d in result["devices"]) else ec.ERROR


def _run_monitor(args: argparse.Namespace) -> int:
    # http.server and psutil: loaded only by this command
    from trainingd.monitor.lifecycle import AlreadyRunning, PortInUse, run_monitor

    logging.getLogger().setLevel(logging.INFO)  # the stderr handler of _setup_logging; "monitor of ... on URL"
    home = Home.at(args.home)
    try:
        run_monitor(home, args.host, args.port, exit_with_daemon=args.exit_with_daemon,
                    ready=lambda url: print(f"trainingd monitor of {home.root}: {url}", flush=True))
    except AlreadyRunning as e:
        print(e, file=sys.stderr)
        return ec.ALREADY_RUNNING
    except PortInUse as e:
        print(e, file=sys.stderr)
        return ec.ERROR
    except OSError as e:
        print(f"trainingd monitor: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return ec.ERROR
    except KeyboardInterrupt:
        pass
    return ec.OK


def _run_node(args: argparse.Namespace) -> int:
    from trainingd.daemon.node import run_node

    logging.getLogger().setLevel(logging.INFO)
    if args.machine_rank < 1:
        print("trainingd node: --machine-rank must be 1 or more (machine 0 runs the daemon)", file=sys.stderr)
        return ec.USAGE
    return run_node(args.home, args.machine_rank)


def _run_generator(args: argparse.Namespace) -> int:
    from trainingd.generator.server import make_server

    logging.getLogger().setLevel(logging.INFO)
    try:
        server = make_server(args.host, args.port)
    except OSError as e:
        print(f"trainingd generator: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return ec.ERROR
    print(f"trainingd generator: http://{args.host}:{server.server_address[1]}", flush=True)
    if args.exit_with_daemon:  # start_all.sh: the generator goes with the daemon it feeds
        import threading

        from trainingd.instance import is_daemon_running
        from trainingd.monitor.lifecycle import watch_daemon

        home = Home.at(args.home)

        def watcher() -> None:
            logging.getLogger("trainingd.generator").info("generator exits: %s",
                                                          watch_daemon(home, threading.Event(),
                                                                       is_daemon_running(home)))
            server.shutdown()

        threading.Thread(target=watcher, name="generator-watcher", daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return ec.OK


def _run_eval(args: argparse.Namespace) -> int:
    """``trainingd eval`` runs the evaluator in its own process: torch is imported there, never here."""
    import importlib.util

    from trainingd.entry_points import run_trainer_tool

    if importlib.util.find_spec("torch") is None:
        print("trainingd eval needs the trainer's packages (torch is not installed)", file=sys.stderr)
        return ec.ERROR
    flags = ["--json"] if args.json else []
    return run_trainer_tool("evaluate", "--home", str(Home.at(args.home).root), "--trigger", "cli", *flags).returncode


def _run_start(args: argparse.Namespace) -> int:
    from trainingd.daemon.options import daemon_options
    from trainingd.instance import start_daemon

    code, message = start_daemon(Home.at(args.home), daemon_options(args))
    print(message, file=sys.stdout if code == ec.OK else sys.stderr)
    return code


def _run_logs(args: argparse.Namespace) -> int:
    """``trainingd logs [-f] [-n N]``: the end of today's daemon log, and with ``-f`` what follows (like tail -F)."""
    from trainingd.logs import follow, last_lines

    if args.lines < 0:
        print("trainingd logs: -n must be 0 or more", file=sys.stderr)
        return ec.USAGE
    link = Home.at(args.home).daemon_log
    if not link.exists() and not args.follow:
        print(f"trainingd logs: no daemon log yet ({link}); the daemon writes it once it starts", file=sys.stderr)
        return ec.ERROR

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        offset = 0
        if link.exists():
            lines, offset = last_lines(link, args.lines)
            write("".join(lines))
        if args.follow:
            while not link.exists():  # a home whose daemon has not started yet
                time.sleep(0.5)
            follow(link, offset, write)
    except KeyboardInterrupt:
        pass
    return ec.OK


# Commands whose options are those of the seed's own scripts: the rest of the command line goes to that parser.
PASS_THROUGH = {
    "daemon": "run the daemon in the foreground (= training_daemon.py; --once, --max-jobs N, --log-level)",
    "train": "train an adapter on one file outside the daemon (= train.py; see trainingd train --help)",
    "consolidate": "fold the live adapter into a new, verified base (= consolidate_model.py; --description, "
                   "--list, --switch)",
}


def _pass_through(argv: list[str]) -> tuple[str, list[str], dict[str, Any]] | None:
    """``(command, its arguments, globals)`` when ``argv`` names a pass-through command after the globals."""
    i, home, as_json = 0, None, False
    while i < len(argv):
        if argv[i] == "--home" and i + 1 < len(argv):
            home, i = argv[i + 1], i + 2
        elif argv[i].startswith("--home="):
            home, i = argv[i].split("=", 1)[1], i + 1
        elif argv[i] == "--json":
            as_json, i = True, i + 1
        else:
            break
    if i < len(argv) and argv[i] in PASS_THROUGH:
        return argv[i], argv[i + 1:], {"home": home, "json": as_json}
    return None


def _run_pass_through(command: str, rest: list[str], given: dict[str, Any]) -> int:
    home = ["--home", given["home"]] if given["home"] is not None else []
    if given["json"] and command != "consolidate":
        print(f"trainingd {command}: --json is not an option of this command", file=sys.stderr)
        return ec.USAGE
    if command == "daemon":
        from trainingd.daemon.loop import main as daemon_main

        return daemon_main([*home, *rest])
    if command == "consolidate":
        from trainingd.lifecycle.consolidate import main as consolidate_main

        return consolidate_main([*home, *(["--json"] if given["json"] else []), *rest])
    # train: this process becomes the trainer (torch is imported only there; signals reach it directly)
    from trainingd.instance import package_env

    env = package_env()
    if given["home"] is not None:
        env["TRAININGD_HOME"] = given["home"]
    os.execve(sys.executable, [sys.executable, "-m", "trainingd.train.standalone", *rest], env)
    return ec.ERROR  # not reached


MONITOR_TEXT = "serve the web monitor's JSON and Prometheus endpoints for a home (read-only)"


def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    """``launch_live_monitor.py`` and ``trainingd monitor``."""
    from trainingd.monitor.server import DEFAULT_HOST, DEFAULT_PORT

    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}; anything else exposes the monitor)")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT}; 0 = any free)")
    p.add_argument("--exit-with-daemon", action="store_true",
                   help="exit once this home's daemon has stopped (checked every second; also when no daemon "
                        "starts within a minute); start_all.sh starts its monitor this way")
    p.set_defaults(run=_run_monitor, command_parser=p)


# --- the tree --------------------------------------------------------------------------------------

@functools.cache
def _shared(option: str, suppress: bool) -> argparse.ArgumentParser:
    """A parent parser holding one shared option; ``suppress`` for the copy inside a subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    if option == "--home":
        parent.add_argument("--home", metavar="DIR", help=HOME_HELP,
                            default=argparse.SUPPRESS if suppress else None)
    else:
        parent.add_argument("--json", action="store_true", help=JSON_HELP,
                            default=argparse.SUPPRESS if suppress else False)
    return parent


def _top(prog: str, description: str, epilog: str, *, with_json: bool = True) -> argparse.ArgumentParser:
    parents = [_shared("--home", False)] + ([_shared("--json", False)] if with_json else [])
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, parents=parents,
                                   formatter_class=TOP_FORMATTER)


def _leaf(sub: argparse._SubParsersAction, name: str, text: str, epilog: str, run: Callable[..., int], *,
          with_json: bool = True, **defaults: Any) -> argparse.ArgumentParser:
    parents = [_shared("--home", True)] + ([_shared("--json", True)] if with_json else [])
    p = sub.add_parser(name, help=one_line(text), description=text, epilog=epilog, parents=parents,
                       formatter_class=FORMATTER)
    p.set_defaults(run=run, command_parser=p, **defaults)
    return p


def add_controller_commands(sub: argparse._SubParsersAction) -> None:
    """status, pause, resume, stop, skip: ``training_controller.py`` and ``trainingd``."""
    epilog = ec.CONTROLLER_HELP
    p = _leaf(sub, "status", "show state, job, progress, metrics and queue", epilog, _run_status, with_json=False)
    view = p.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help='print {"status": {...}, "queue": [...], "daemon_running": bool} as JSON')
    view.add_argument("--watch", action="store_true", help="redraw every second until Ctrl-C")
    for action, text in REQUESTS:
        p = _leaf(sub, action, text, NO_DAEMON_NOTE + "\n\n" + epilog, _run_request, action=action)
        p.add_argument("--wait", action="store_true", help="wait until the daemon acknowledges the request")
        p.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S, metavar="S",
                       help=f"with --wait: give up after S seconds, exit {ec.TIMEOUT} "
                            f"(default {DEFAULT_WAIT_TIMEOUT_S:g})")


def add_queue_commands(sub: argparse._SubParsersAction) -> None:
    """add, list, status, retry, remove: ``training_queue.py`` and ``trainingd queue``."""
    epilog = ec.QUEUE_HELP
    p = _leaf(sub, "add", "copy a JSONL file into the queue", epilog, _run_queue(
        lambda home, a: add(home, a.file, priority=a.priority, force=a.force), _message))
    p.add_argument("file", type=Path, metavar="FILE")
    p.add_argument("--priority", choices=PRIORITIES, default="normal")
    p.add_argument("--force", action="store_true", help="train it even if the same content was trained before")
    p = _leaf(sub, "list", "list jobs (pending in claim order first)", epilog, _run_queue(
        lambda home, a: list_jobs(home, a.state), lambda r: format_jobs(r["jobs"])))
    p.add_argument("--state", choices=JOB_STATES, action="append", help="only this state (repeatable)")
    _leaf(sub, "status", "count jobs per state and priority", epilog, _run_queue(
        lambda home, a: counts(home), lambda r: format_counts(r["counts"])))
    p = _leaf(sub, "retry", "move a failed job back to pending", epilog, _run_queue(
        lambda home, a: retry(home, a.job_id), _message))
    p.add_argument("job_id", metavar="ID")
    p = _leaf(sub, "remove", "move a pending job to failed/ (nothing is deleted)", epilog, _run_queue(
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


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return parser.add_subparsers(dest="command", required=True, metavar="COMMAND")


def controller_parser(prog: str = "training_controller.py") -> argparse.ArgumentParser:
    parser = _top(prog, "Steer the training daemon of a home, or show its status.",
                  NO_DAEMON_NOTE + "\n\n" + ec.CONTROLLER_HELP)
    sub = _subcommands(parser)
    add_controller_commands(sub)
    from trainingd.cli.lifecycle import add_history_command

    add_history_command(sub, _leaf)
    return parser


def queue_parser(prog: str = "training_queue.py") -> argparse.ArgumentParser:
    parser = _top(prog, "Add, list, retry and remove training jobs.", ec.QUEUE_HELP)
    add_queue_commands(_subcommands(parser))
    return parser


def validator_parser(prog: str = "config_validator.py") -> argparse.ArgumentParser:
    parser = _top(prog, VALIDATE_TEXT, ec.VALIDATOR_HELP)
    add_validate_arguments(parser)
    return parser


def trainingd_parser(prog: str = "trainingd") -> argparse.ArgumentParser:
    parser = _top(prog, "Continuous LoRA/QLoRA fine-tuning from a folder.\n\nstatus, pause, resume, stop and skip "
                        "are training_controller.py's commands,\nqueue is training_queue.py, validate is "
                        "config_validator.py.", ec.TRAININGD_HELP)
    parser.add_argument("--version", action="version", version=f"trainingd {__version__}")
    sub = _subcommands(parser)
    _leaf(sub, "init", "create the runtime folders and a default config.json (kept if present)",
          ec.INIT_HELP, _run_init)
    from trainingd.daemon.options import add_daemon_options

    add_daemon_options(_leaf(sub, "start", "start the daemon in the background; refused (exit 1) if one runs "
                             "(= bin/launch_training_daemon.sh)", ec.START_HELP, _run_start, with_json=False))
    for name, text in PASS_THROUGH.items():  # parsed by their own scripts' parsers (see main)
        sub.add_parser(name, help=one_line(text), description=text, add_help=False)
    logs = _leaf(sub, "logs", "print the end of today's daemon log (logs/daemon_YYYYMMDD.log); -f follows it", "",
                 _run_logs, with_json=False)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (across midnight too)")
    logs.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="how many last lines (default 10)")
    add_controller_commands(sub)
    text = "add, list, retry, remove jobs (training_queue.py)"
    queue = sub.add_parser("queue", help=text, description=text, epilog=ec.QUEUE_HELP,
                           parents=[_shared("--home", True), _shared("--json", True)], formatter_class=FORMATTER)
    add_queue_commands(queue.add_subparsers(dest="queue_command", required=True, metavar="COMMAND"))
    validate = _leaf(sub, "validate", "check a config.json (config_validator.py)", ec.VALIDATOR_HELP,
                     _run_validate)
    add_validate_arguments(validate)
    add_monitor_arguments(_leaf(sub, "monitor", MONITOR_TEXT, MONITOR_EPILOG, _run_monitor, with_json=False))
    from trainingd.cli.lifecycle import add_history_command, add_lifecycle_commands

    add_history_command(sub, _leaf)
    add_lifecycle_commands(sub, _leaf, _shared)
    _leaf(sub, "plan", "estimate the peak memory of the configured run on each visible device", ec.PLAN_HELP,
          _run_plan)
    add_doctor_arguments(_leaf(sub, "doctor", "check the home and say how to fix each problem "
                               "(comprehensive_health_check.py)", "Exit 0: healthy; 1: problems found.", run_doctor))
    text = "serve SYLLO puzzles: /generate, /eval (held-out), /healthz"
    gen = _leaf(sub, "generator", text, "", _run_generator, with_json=False)
    gen.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    gen.add_argument("--port", type=port_number, default=8091, help="port (default 8091; 0 = any free)")
    gen.add_argument("--exit-with-daemon", action="store_true",
                     help="exit once the daemon of --home has stopped (start_all.sh starts it this way)")
    _leaf(sub, "eval", "evaluate the live adapter on the held-out set (exact match, token accuracy)", "",
          _run_eval)
    node = _leaf(sub, "node", "follow the daemon from another machine of a multi-machine group; for every job the "
                 "daemon of the shared --home starts, start this machine's trainer processes "
                 "(distributed.num_machines)", ec.NODE_HELP,
                 _run_node, with_json=False)
    node.add_argument("--machine-rank", type=int, required=True, metavar="R",
                      help="this machine's rank, 1 .. num_machines - 1 (the daemon's machine is 0)")
    return parser


MONITOR_EPILOG = textwrap.fill(
    "Endpoints: /healthz /api/status /api/metrics /api/queue /api/history /api/system /api/gpu /api/memory "
    "/api/logs /metrics; POST /api/control/pause|resume|skip with the token of control/monitor_token in "
    "X-Trainingd-Token. One monitor per home (.monitor.lock, .monitor.pid). Stop with Ctrl-C or SIGTERM.",
    110) + "\n\n" + ec.MONITOR_HELP


def monitor_parser(prog: str = "launch_live_monitor.py") -> argparse.ArgumentParser:
    parser = _top(prog, MONITOR_TEXT[0].upper() + MONITOR_TEXT[1:] + ".", MONITOR_EPILOG, with_json=False)
    add_monitor_arguments(parser)
    return parser


# --- entry points ----------------------------------------------------------------------------------

def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    _setup_logging()
    args = parser.parse_args(argv)
    # init, start (the daemon initialises its home) and plan (it builds the embedded base there) make a home; the
    # monitor and logs may look before the daemon that makes it (they only read).
    problem = home_problem(getattr(args, "home", None),
                           creates=args.run in (_run_init, _run_start, _run_plan, _run_monitor, _run_logs))
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


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1-65535 (0 = any free port)")
    return port


@quiet_broken_pipe
def main(argv: list[str] | None = None) -> int:
    """``trainingd`` (the console script and ``python -m trainingd``)."""
    found = _pass_through(sys.argv[1:] if argv is None else argv)
    if found is not None:
        return _run_pass_through(*found)
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
