"""The building blocks of the one argparse tree (``trainingd.cli.main``): shared options, leaves, formatters.

``--home`` and ``--json`` work before or after the subcommand: ``top`` declares them with real defaults, and every
``leaf`` declares them again (through parent parsers from ``shared``) with ``default=SUPPRESS``, so a subcommand
that does not see the option leaves the value given before it alone.

The command modules (``home``, ``services``, ``processes``) build their leaves with these, so none of them imports
``main`` back (no import circle: tests/test_layout.py).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from typing import Any, Callable

from trainingd import exit_codes as ec

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


def one_line(text: str, limit: int = 100) -> str:
    """A command's line in ``trainingd --help``: its help, cut before the first "(" or ";" when it is long."""
    if len(text) <= limit:
        return text
    cuts = [i for i in (text.find(" ("), text.find("; ")) if i > 0]
    return text[:min(cuts)] if cuts else text


def setup_logging() -> None:
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


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: use 1-65535 (0 = any free port)")
    return port


@functools.cache
def shared(option: str, suppress: bool) -> argparse.ArgumentParser:
    """A parent parser holding one shared option; ``suppress`` for the copy inside a subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    if option == "--home":
        parent.add_argument("--home", metavar="DIR", help=HOME_HELP,
                            default=argparse.SUPPRESS if suppress else None)
    else:
        parent.add_argument("--json", action="store_true", help=JSON_HELP,
                            default=argparse.SUPPRESS if suppress else False)
    return parent


def top(prog: str, description: str, epilog: str, *, with_json: bool = True) -> argparse.ArgumentParser:
    parents = [shared("--home", False)] + ([shared("--json", False)] if with_json else [])
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog, parents=parents,
                                   formatter_class=TOP_FORMATTER)


def leaf(sub: argparse._SubParsersAction, name: str, text: str, epilog: str, run: Callable[..., int], *,
         with_json: bool = True, **defaults: Any) -> argparse.ArgumentParser:
    parents = [shared("--home", True)] + ([shared("--json", True)] if with_json else [])
    p = sub.add_parser(name, help=one_line(text), description=text, epilog=epilog, parents=parents,
                       formatter_class=FORMATTER)
    p.set_defaults(run=run, command_parser=p, **defaults)
    return p


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
