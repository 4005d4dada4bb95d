"""Every named exit code of trainingd (gunicorn-style), and the per-command tables built from them.

The trainer's code tells the daemon what to do with the job (see ``TRAINER``); the daemon's and the command
lines' codes are for scripts. Each command's ``--help`` ends with its table (``help_table``); the README's
"Exit codes" section is checked against these tables by ``tests/test_exit_codes.py``.

    python -m trainingd.exit_codes          # print every table
"""

from __future__ import annotations

import textwrap
from typing import NamedTuple

# --- the numbers -----------------------------------------------------------------------------------
OK = 0
CRASH = 1                # trainer: unexpected error (traceback in logs/training_output.log)
ERROR = 1                # command lines: error or refused
USAGE = 2                # bad command line (argparse's own code)
CONFIG_ERROR = 3         # config.json invalid or the base model missing: never retried in a loop
DATA_ERROR = 4           # trainer: the file cannot be trained
TIMEOUT = 4              # command lines: --wait gave up
STOPPED = 5
SKIPPED = 6
CHECKPOINT_MISMATCH = 7
ADAPTER_MISMATCH = 8     # trainer: the adapter to continue has another base or LoRA shape
ALREADY_RUNNING = 75     # daemon, monitor: another one holds the lock of this home (EX_TEMPFAIL)

NAMES = {
    OK: "ok",
    CRASH: "crash",
    USAGE: "usage",
    CONFIG_ERROR: "config_error",
    DATA_ERROR: "data_error",
    STOPPED: "stopped",
    SKIPPED: "skipped",
    CHECKPOINT_MISMATCH: "checkpoint_mismatch",
    ADAPTER_MISMATCH: "adapter_mismatch",
    ALREADY_RUNNING: "already_running",
}


def name_of(code: int) -> str:
    """The trainer's exit code as the daemon logs and records it (``killed_by_signal_9`` for -9)."""
    if code < 0:
        return f"killed_by_signal_{-code}"
    return NAMES.get(code, f"exit_{code}")


# --- what each command means by them ---------------------------------------------------------------
class Row(NamedTuple):
    code: int
    meaning: str


TRAINER = (
    Row(OK, "ok: job trained, adapter published to current_model/ (daemon: job -> done)"),
    Row(CRASH, "crash: unexpected error, traceback in logs/training_output.log (daemon: retry, then -> failed)"),
    Row(USAGE, "usage: bad command line (daemon: job -> failed)"),
    Row(CONFIG_ERROR, "config error: config.json invalid or base model missing (daemon: job back to its queue, "
                      "daemon stops; never retried in a loop)"),
    Row(DATA_ERROR, "data error: the file cannot be trained, reason file written (daemon: job -> failed)"),
    Row(STOPPED, "stopped: stop requested, checkpoint written; resume with --resume "
                 "(daemon: job -> head of its queue)"),
    Row(SKIPPED, "skipped: skip requested, adapter changes discarded (daemon: job -> failed)"),
    Row(CHECKPOINT_MISMATCH, "checkpoint mismatch: a checkpoint made with other data, base or locked settings "
                             "(daemon: job -> failed)"),
    Row(ADAPTER_MISMATCH, "adapter mismatch: the adapter to continue has another base or LoRA shape (daemon: job "
                          "back to its queue; the daemon holds, a condition of the home, and fails no job)"),
)

DAEMON = (
    Row(OK, "stopped cleanly (stop request, .stop, SIGTERM/SIGINT), or the queue ran empty with --once / "
            "--max-jobs"),
    Row(CONFIG_ERROR, "CONFIG_ERROR: config.json invalid or the base model missing (the message names the key), "
                      "or with --once a locked key that no longer matches the live adapter; not retried"),
    Row(ALREADY_RUNNING, "ALREADY_RUNNING: another daemon holds the lock of this home (.daemon.lock)"),
)

CONTROLLER = (
    Row(OK, "ok"),
    Row(ERROR, "error or refused (bad input, unknown id, no daemon running)"),
    Row(USAGE, "usage error (bad command line)"),
    Row(CONFIG_ERROR, "config error (config.json invalid or base model missing)"),
    Row(TIMEOUT, "timeout (--wait: the daemon did not acknowledge in time)"),
)

QUEUE = (
    Row(OK, "ok"),
    Row(ERROR, "error or refused (missing file, a folder, unknown id, running job, no daemon for "
               "--skip-if-running)"),
    Row(USAGE, "usage error (bad command line)"),
)

VALIDATOR = (
    Row(OK, "ok: the config is valid and its base model is present"),
    Row(ERROR, "--approve refused (a LoRA shape change, or the new base is not on disk)"),
    Row(USAGE, "usage error (bad command line)"),
    Row(CONFIG_ERROR, "config error (the message names the key, or the missing base model), or a problem of the "
                      "home: a locked key or the base model's content differs from the live adapter (each listed)"),
)

INIT = (
    Row(OK, "ok"),
    Row(ERROR, "error (the home cannot be created)"),
    Row(USAGE, "usage error (bad command line)"),
)

MONITOR = (
    Row(OK, "stopped (Ctrl-C, SIGTERM, or with --exit-with-daemon the daemon of the home stopped)"),
    Row(ERROR, "cannot serve: the port is in use (choose another with --port) or the address cannot be bound"),
    Row(USAGE, "usage error (bad command line)"),
    Row(ALREADY_RUNNING, "ALREADY_RUNNING: another monitor holds the lock of this home (.monitor.lock)"),
)

PLAN = (
    Row(OK, "the estimate fits every visible device"),
    Row(ERROR, "it does not fit at least one device (each such row says what to change)"),
    Row(USAGE, "usage error (bad command line)"),
    Row(CONFIG_ERROR, "config error (the message names the key), or the base model is neither on disk nor an "
                      "embedded model that can be built here"),
)

NODE = (
    Row(OK, "stopped (SIGTERM or Ctrl-C; its trainer processes were stopped too)"),
    Row(USAGE, "usage error (bad command line, or --machine-rank 0)"),
)

START = (
    Row(OK, "started: the daemon holds the lock of this home and has written .daemon.pid"),
    Row(ERROR, "not started: a daemon already runs for this home, or it exited at once (see "
               "logs/daemon_stdout.log)"),
    Row(USAGE, "usage error (bad command line)"),
)

# ``trainingd`` itself: its subcommands' codes (the controller's table; ``trainingd monitor`` has its own).
TRAININGD = CONTROLLER

TABLES = {
    "train.py": TRAINER,
    "training_daemon.py": DAEMON,
    "training_controller.py": CONTROLLER,
    "training_queue.py": QUEUE,
    "config_validator.py": VALIDATOR,
    "trainingd init": INIT,
    "trainingd plan": PLAN,
    "trainingd node": NODE,
    "trainingd start": START,
    "launch_live_monitor.py": MONITOR,
    "trainingd": TRAININGD,
}


def help_table(rows: tuple[Row, ...]) -> str:
    """The ``exit codes:`` block that ends a command's ``--help``."""
    width = max(len(str(r.code)) for r in rows)
    indent = " " * (width + 4)
    return "exit codes:\n" + "\n".join(
        textwrap.fill(r.meaning, 110, initial_indent=f"  {r.code:<{width}}  ", subsequent_indent=indent,
                      break_on_hyphens=False)
        for r in rows)


TRAINER_HELP = help_table(TRAINER)
DAEMON_HELP = help_table(DAEMON)
CONTROLLER_HELP = help_table(CONTROLLER)
QUEUE_HELP = help_table(QUEUE)
VALIDATOR_HELP = help_table(VALIDATOR)
INIT_HELP = help_table(INIT)
MONITOR_HELP = help_table(MONITOR)
PLAN_HELP = help_table(PLAN)
NODE_HELP = help_table(NODE)
START_HELP = help_table(START)
TRAININGD_HELP = help_table(TRAININGD)


if __name__ == "__main__":  # pragma: no cover - a reference for people writing scripts
    for command, rows in TABLES.items():
        print(f"{command}\n{help_table(rows)}\n")
