"""The commands that hand the work to another entry point: daemon, train, consolidate (pass-through) and eval.

    trainingd daemon ...        = training_daemon.py (trainingd.daemon.loop's own parser)
    trainingd train ...         = train.py (this process becomes the trainer: python -m trainingd.train.standalone)
    trainingd consolidate ...   = consolidate_model.py (trainingd.lifecycle.consolidate's own parser)
    trainingd eval              the evaluator in its own process (python -m trainingd.train.evaluate)

A pass-through command's options are those of the seed's own script, so ``trainingd.cli.main.main`` finds it
before the tree parses anything (``pass_through``) and gives it the rest of the command line; the tree only lists it
(``add_pass_through_commands``) for ``trainingd --help``. Torch is imported only in the processes started here.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from trainingd import exit_codes as ec
from trainingd.cli.tree import leaf, one_line
from trainingd.paths import Home

# Commands whose options are those of the seed's own scripts: the rest of the command line goes to that parser.
PASS_THROUGH = {
    "daemon": "run the daemon in the foreground (= training_daemon.py; --once, --max-jobs N, --log-level)",
    "train": "train an adapter on one file outside the daemon (= train.py; see trainingd train --help)",
    "consolidate": "fold the live adapter into a new, verified base (= consolidate_model.py; --description, "
                   "--list, --switch)",
}


def pass_through(argv: list[str]) -> tuple[str, list[str], dict[str, Any]] | None:
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


def run_pass_through(command: str, rest: list[str], given: dict[str, Any]) -> int:
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


def run_eval(args: argparse.Namespace) -> int:
    """``trainingd eval`` runs the evaluator in its own process: torch is imported there, never here."""
    import importlib.util

    from trainingd.entry_points import run_trainer_tool

    if importlib.util.find_spec("torch") is None:
        print("trainingd eval needs the trainer's packages (torch is not installed)", file=sys.stderr)
        return ec.ERROR
    flags = (["--json"] if args.json else []) + (["--level", str(args.level)] if args.level else [])
    return run_trainer_tool("evaluate", "--home", str(Home.at(args.home).root), "--trigger", "cli", *flags).returncode


def add_pass_through_commands(sub: argparse._SubParsersAction) -> None:
    """daemon, train, consolidate: listed in the tree, parsed by their own scripts' parsers (see ``pass_through``)."""
    for name, text in PASS_THROUGH.items():
        sub.add_parser(name, help=one_line(text), description=text, add_help=False)


def add_eval_command(sub: argparse._SubParsersAction) -> None:
    p = leaf(sub, "eval", "evaluate the live adapter on the held-out set (exact match, token accuracy)", "", run_eval)
    p.add_argument("--level", type=int, choices=range(1, 6), metavar="1..5",
                   help="score on this puzzle level's generated held-out set instead of the configured one")
