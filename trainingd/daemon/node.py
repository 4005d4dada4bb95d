"""``trainingd node``: the other machines of a job whose process group spans several (``distributed.num_machines``).

The daemon runs on machine 0 and starts its share of the processes there; it records every trainer it starts in
``.trainer.json`` (``contracts.trainer_record``), with the trainer's arguments and the number of machines. On
each other machine, ``trainingd node --home /shared/home --machine-rank R`` watches that record on the shared
home and, for every new multi-machine trainer, starts this machine's share with the same launcher
(``trainer_process.launcher_argv`` with its own rank) and the same arguments, so the group meets and trains; the
ranks here write nothing but their log (``logs/training_output.node<R>.log``): the main process does the writes.

When the daemon's trainer ends (the record goes or names another trainer), the ranks here end too: their peers
are gone, so their next collective fails; a launcher still running 30 s later is stopped (SIGTERM, then SIGKILL).
SIGTERM or Ctrl-C stops the node and its processes. Stdlib only (the trainer runs in its own processes).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from trainingd.config import ConfigError, load_config
from trainingd.contracts.trainer_record import TrainerRecord, read_trainer_record
from trainingd.paths import Home
from trainingd.daemon.trainer_process import launcher_argv, trainer_env, trainer_target

log = logging.getLogger("trainingd.daemon.node")

ORPHAN_GRACE_S = 30.0


def record_key(record: TrainerRecord | None) -> tuple | None:
    """Which trainer of the daemon a record names, if it is one this machine must join."""
    if record is None or record.machines <= 1 or not record.trainer_args:
        return None
    return (record.job_id, record.started_at, record.pid)


class Node:
    """One machine's follower: at most one launcher of its own at a time."""

    def __init__(self, home: Home, machine_rank: int, poll_s: float = 0.5):
        self.home = home
        self.rank = machine_rank
        self.poll_s = poll_s
        self.proc: subprocess.Popen | None = None
        self.key: tuple | None = None  # the daemon trainer our launcher joined (or last joined)
        self.orphan_since: float | None = None
        self.stopping = False

    def launch(self, record: TrainerRecord) -> None:
        cfg = load_config(self.home.config)
        argv = launcher_argv(cfg.distributed, trainer_target(), machine_rank=self.rank) + list(
            record.trainer_args) + ["--parent-pid", str(os.getpid())]
        self.home.logs.mkdir(parents=True, exist_ok=True)
        with open(self.home.node_training_log(self.rank), "ab") as out:
            out.write(f"\n===== machine {self.rank}: job {record.job_id} (trainer {record.pid} started "
                      f"{record.started_at}) =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, cwd=self.home.root, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=trainer_env(True), start_new_session=True)
        log.info("machine %d joined job %s with %d of %d processes (launcher pid %d)", self.rank, record.job_id,
                 cfg.distributed.num_processes // max(1, cfg.distributed.num_machines), cfg.distributed.num_processes,
                 self.proc.pid)

    def end_launcher(self, why: str) -> None:
        """SIGTERM this machine's launcher group, then SIGKILL it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        log.warning("machine %d: stopping its trainer processes (%s)", self.rank, why)
        for sig, wait_s in ((signal.SIGTERM, ORPHAN_GRACE_S), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def tick(self) -> None:
        record = read_trainer_record(self.home)
        key = record_key(record)
        if self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                log.info("machine %d: its processes for job %s exited (%s)", self.rank, self.key[0], code)
                self.proc = None
                self.orphan_since = None
            elif key != self.key:  # the daemon's trainer ended or was replaced: ours should end by themselves
                self.orphan_since = self.orphan_since or time.monotonic()
                if time.monotonic() - self.orphan_since > ORPHAN_GRACE_S:
                    self.end_launcher("the daemon's trainer is gone")
                    self.proc = None
                    self.orphan_since = None
            return
        if key is not None and key != self.key:
            self.key = key
            try:
                self.launch(record)
            except (ConfigError, OSError) as e:
                log.error("machine %d cannot join job %s: %s", self.rank, record.job_id, e)

    def run(self) -> int:
        def stop(signum, frame) -> None:  # noqa: ARG001 - signal API
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("machine %d follows the daemon of %s", self.rank, self.home.root)
        while not self.stopping:
            self.tick()
            time.sleep(self.poll_s)
        self.end_launcher("the node was asked to stop")
        log.info("machine %d stopped", self.rank)
        return 0


def run_node(home: Path | str, machine_rank: int, poll_s: float = 0.5) -> int:
    return Node(Home.at(home), machine_rank, poll_s).run()
