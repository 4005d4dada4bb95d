"""The commands that make a home or read its files before a daemon runs there: init, start, logs, plan.

    trainingd init                      create the runtime folders and a default config.json
    trainingd start [--once] [--max-jobs N]   the daemon in the background (= bin/launch_training_daemon.sh)
    trainingd logs [-f] [-n N]          today's daemon log
    trainingd plan                      the memory estimate of the configured run

These are the commands that may name a ``--home`` that does not exist yet (``trainingd.cli.main.home_problem``):
init, start and plan make it, logs waits for it. Their leaves are added to ``trainingd.cli.main``'s tree by the
``add_*_command`` functions here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from trainingd import exit_codes as ec
from trainingd.cli.formatting import format_init, print_json
from trainingd.cli.tree import leaf
from trainingd.instance import init_home
from trainingd.paths import Home


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


def run_init(args: argparse.Namespace) -> int:
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


def run_start(args: argparse.Namespace) -> int:
    from trainingd.daemon.options import daemon_options
    from trainingd.instance import start_daemon

    code, message = start_daemon(Home.at(args.home), daemon_options(args))
    print(message, file=sys.stdout if code == ec.OK else sys.stderr)
    return code


def run_logs(args: argparse.Namespace) -> int:
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


def run_plan(args: argparse.Namespace) -> int:
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


# --- the leaves (added one by one: the tree keeps its commands in the order of trainingd --help) -------

def add_init_command(sub: argparse._SubParsersAction) -> None:
    leaf(sub, "init", "create the runtime folders and a default config.json (kept if present)", ec.INIT_HELP,
         run_init)


def add_start_command(sub: argparse._SubParsersAction) -> None:
    from trainingd.daemon.options import add_daemon_options

    add_daemon_options(leaf(sub, "start", "start the daemon in the background; refused (exit 1) if one runs "
                            "(= bin/launch_training_daemon.sh)", ec.START_HELP, run_start, with_json=False))


def add_logs_command(sub: argparse._SubParsersAction) -> None:
    logs = leaf(sub, "logs", "print the end of today's daemon log (logs/daemon_YYYYMMDD.log); -f follows it", "",
                run_logs, with_json=False)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (across midnight too)")
    logs.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="how many last lines (default 10)")


def add_plan_command(sub: argparse._SubParsersAction) -> None:
    leaf(sub, "plan", "estimate the peak memory of the configured run on each visible device", ec.PLAN_HELP,
         run_plan)
