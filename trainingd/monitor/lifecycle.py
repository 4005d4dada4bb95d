"""The monitor process's life: one monitor per home, a clear refusal of a taken port, and an optional tie to the
daemon's life.

    python3 launch_live_monitor.py [--home DIR] [--port 8080] [--exit-with-daemon]

One monitor per home: ``.monitor.lock`` is flocked for the monitor's life and ``.monitor.pid`` is written once
the port is bound (so a script that waits for the pid file can then connect). With ``exit_with_daemon`` a
watcher thread checks the daemon's flock about once a second and shuts the server down once the lock, having
been held, is released: ``start_all.sh`` starts its monitor this way so that it never outlives its daemon.
SIGTERM and SIGINT only record the request; the watcher shuts the server down (``serve_forever`` runs in the
main thread, and ``shutdown()`` called from that thread would wait for itself).
"""

from __future__ import annotations

import errno
import logging
import signal
import threading
import time
from typing import Any, Callable

from trainingd.instance import InstanceLock, is_daemon_running, read_pid
from trainingd.paths import Home
from trainingd.monitor.server import create_server

log = logging.getLogger(__name__)

CHECK_EVERY_S = 1.0
# A monitor tied to a daemon that never shows up (it failed right after its launcher returned) must not stay.
DAEMON_START_GRACE_S = 60.0


class AlreadyRunning(Exception):
    """Another monitor holds ``.monitor.lock`` of this home; the message names its pid."""


class PortInUse(Exception):
    """The port is taken by another program; the message names it and ``--port``."""


def watch_daemon(home: Home, stop: threading.Event, seen: bool, check_every_s: float = CHECK_EVERY_S,
                 grace_s: float = DAEMON_START_GRACE_S) -> str:
    """Block until ``stop`` is set or the daemon of ``home`` has stopped; return why, for the log.

    "Stopped" means its flock was seen held (``seen``: already before the monitor said it was ready) and then
    released, or never held within ``grace_s``.
    """
    started = time.monotonic()
    while not stop.wait(check_every_s if seen else min(check_every_s, 0.2)):
        if is_daemon_running(home):
            seen = True
        elif seen:
            return "the daemon has stopped"
        elif time.monotonic() - started > grace_s:
            return f"no daemon started within {grace_s:.0f}s"
    return "asked to stop"


def run_monitor(home: Home, host: str, port: int, exit_with_daemon: bool = False,
                ready: Callable[[str], None] | None = None) -> None:
    """Serve ``home`` until SIGTERM/SIGINT (or, with ``exit_with_daemon``, until its daemon stops).

    Raises ``AlreadyRunning`` or ``PortInUse`` before serving anything; other ``OSError`` from binding as is.
    """
    home.root.mkdir(parents=True, exist_ok=True)
    lock = InstanceLock(home, home.monitor_lock, home.monitor_pid)
    if not lock.acquire(write_pid=False):
        pid = read_pid(home, home.monitor_pid)
        raise AlreadyRunning(f"trainingd monitor already running for {home.root} (pid {pid or 'unknown'}); "
                             "not starting another")
    try:
        try:
            server = create_server(home, host, port)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise PortInUse(f"trainingd monitor: port {port} on {host} is already in use; choose another "
                                "with --port") from None
            raise
        # Looked at before the pid file says "ready": a daemon that stops right after still counts as seen.
        daemon_seen = is_daemon_running(home)
        lock.write_pid()
        stop = threading.Event()

        def on_signal(_signum: int, _frame: Any) -> None:
            stop.set()  # only record; the watcher acts

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, on_signal)

        def watcher() -> None:
            why = watch_daemon(home, stop, daemon_seen) if exit_with_daemon else (stop.wait(), "asked to stop")[1]
            log.info("monitor of %s exits: %s", home.root, why)
            server.shutdown()

        threading.Thread(target=watcher, name="monitor-watcher", daemon=True).start()
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{server.server_address[1]}/"
        log.info("monitor of %s on %s", home.root, url)
        if ready is not None:
            ready(url)
        try:
            server.serve_forever(poll_interval=0.5)
        finally:
            server.server_close()
    finally:
        lock.release()
