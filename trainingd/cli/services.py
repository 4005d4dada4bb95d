"""The long-running commands beside the daemon: the web monitor, the puzzle generator, a follower machine's node.

    trainingd monitor [--host H] [--port P] [--exit-with-daemon]     = launch_live_monitor.py
    trainingd generator [--host H] [--port P] [--exit-with-daemon]   the SYLLO puzzle generator service
    trainingd node --machine-rank R                                  a follower of a multi-machine group

Each serves until Ctrl-C (or until its daemon stops); the servers' modules (http.server, psutil) are imported only
when the command runs. Their leaves are added to ``trainingd.cli.main``'s tree by the ``add_*`` functions here.
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap

from trainingd import exit_codes as ec
from trainingd.cli.tree import leaf, port_number
from trainingd.paths import Home

MONITOR_TEXT = "serve the web monitor's JSON and Prometheus endpoints for a home (read-only)"
MONITOR_EPILOG = textwrap.fill(
    "Endpoints: /healthz /api/status /api/metrics /api/queue /api/history /api/system /api/gpu /api/memory "
    "/api/logs /metrics; POST /api/control/pause|resume|skip with the token of control/monitor_token in "
    "X-Trainingd-Token. One monitor per home (.monitor.lock, .monitor.pid). Stop with Ctrl-C or SIGTERM.",
    110) + "\n\n" + ec.MONITOR_HELP


def run_monitor(args: argparse.Namespace) -> int:
    # http.server and psutil: loaded only by this command
    from trainingd.monitor.lifecycle import AlreadyRunning, PortInUse, run_monitor as serve

    logging.getLogger().setLevel(logging.INFO)  # the stderr handler of setup_logging; "monitor of ... on URL"
    home = Home.at(args.home)
    try:
        serve(home, args.host, args.port, exit_with_daemon=args.exit_with_daemon,
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


def run_node(args: argparse.Namespace) -> int:
    from trainingd.daemon.node import run_node as follow

    logging.getLogger().setLevel(logging.INFO)
    if args.machine_rank < 1:
        print("trainingd node: --machine-rank must be 1 or more (machine 0 runs the daemon)", file=sys.stderr)
        return ec.USAGE
    return follow(args.home, args.machine_rank)


def run_generator(args: argparse.Namespace) -> int:
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


# --- the leaves --------------------------------------------------------------------------------------

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
    p.set_defaults(run=run_monitor, command_parser=p)


def add_monitor_command(sub: argparse._SubParsersAction) -> None:
    add_monitor_arguments(leaf(sub, "monitor", MONITOR_TEXT, MONITOR_EPILOG, run_monitor, with_json=False))


def add_generator_command(sub: argparse._SubParsersAction) -> None:
    text = "serve SYLLO puzzles: /generate, /eval (held-out), /healthz"
    gen = leaf(sub, "generator", text, "", run_generator, with_json=False)
    gen.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    gen.add_argument("--port", type=port_number, default=8091, help="port (default 8091; 0 = any free)")
    gen.add_argument("--exit-with-daemon", action="store_true",
                     help="exit once the daemon of --home has stopped (start_all.sh starts it this way)")


def add_node_command(sub: argparse._SubParsersAction) -> None:
    node = leaf(sub, "node", "follow the daemon from another machine of a multi-machine group; for every job the "
                "daemon of the shared --home starts, start this machine's trainer processes "
                "(distributed.num_machines)", ec.NODE_HELP, run_node, with_json=False)
    node.add_argument("--machine-rank", type=int, required=True, metavar="R",
                      help="this machine's rank, 1 .. num_machines - 1 (the daemon's machine is 0)")
