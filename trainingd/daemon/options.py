"""The daemon's command line: ``training_daemon.py``, ``trainingd daemon`` and ``trainingd start`` share its options.

    parser = build_parser()                   # training_daemon.py's own parser (trainingd.daemon.loop.main)
    add_daemon_options(sub)                   # the same options on a subcommand of the trainingd tree
"""

from __future__ import annotations

import argparse

from trainingd import exit_codes as ec

EXIT_TABLE = ec.DAEMON_HELP


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="training_daemon.py",
        description="Run the trainingd daemon of a home in the foreground: watch inbox/, train queued files, "
                    "write status/training_status.json. SIGHUP re-reads config.json (an invalid one is refused, "
                    "the running configuration kept).",
        epilog=EXIT_TABLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", help="home folder (default: $TRAININGD_HOME, else the current directory)")
    add_daemon_options(p)
    return p


def add_daemon_options(p: argparse.ArgumentParser) -> None:
    """The daemon's options other than ``--home``: ``training_daemon.py``, ``trainingd daemon`` and ``start``."""
    p.add_argument("--once", action="store_true", help="process the queue and the inbox until empty, then exit 0")
    p.add_argument("--max-jobs", type=int, metavar="N", help="exit 0 after N jobs have ended (done or failed)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   type=str.upper, help="log level (default INFO)")


def daemon_options(args: argparse.Namespace) -> list[str]:
    """The command-line form of ``add_daemon_options``' values (what ``trainingd start`` passes on)."""
    return ([*(["--once"] if args.once else []), *(["--max-jobs", str(args.max_jobs)] if args.max_jobs else []),
             "--log-level", args.log_level])

