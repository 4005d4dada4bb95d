"""The one trainer process group of a daemon: how it is started and signalled.

The trainer runs as ``python -m trainingd.train --home H --job-id ID --dataset FILE --reason-file
<job>/result.json --parent-pid <daemon>`` in its own session (so a signal to the group reaches every process it
starts, and a terminal's Ctrl-C does not), with the home as working directory and its output appended to
``logs/training_output.log``. What it is told to do goes through ``control/trainer_command.json``
(``trainingd.contracts.trainer_command``); signals are only the stop ladder's last rungs. Its pid and group are
recorded in ``.trainer.json`` (``trainingd.contracts.trainer_record``) so a later daemon can find it.

Set ``TRAININGD_TRAINER=/path/script.py`` to run that script instead of ``-m trainingd.train`` (same
arguments, same contract); useful for wrapping the trainer, e.g. under a profiler.

With ``distributed.num_processes > 1`` the trainer starts through a launcher (:func:`launcher_argv`):
``accelerate launch`` where a GPU is visible or an accelerate config file is named, otherwise
``torchrun`` (several processes on a CPU, gloo). The launcher is the group's leader: the stop ladder signals its
group and every process under it, a worker that dies makes the launcher end the others and exit non-zero (one
failure for the daemon), and the job's exit code is the main process's result file (:meth:`TrainerProcess.exit_code`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import atomic_write_text
from trainingd.contracts.checkpoint import MICRO_BATCH_FILE
from trainingd.contracts.job import now_iso
from trainingd.contracts.progress import clear_progress, read_progress
from trainingd.contracts.result import clear_result, read_result, result_path
from trainingd.contracts.trainer_record import (TrainerRecord, clear_trainer_record, read_trainer_record,
                                               write_trainer_record)
from trainingd.faults import fault_point
from trainingd.jobqueue import Job
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.loop")

TRAINER_ENV = "TRAININGD_TRAINER"
LAUNCHER_ENV = "TRAININGD_LAUNCHER"  # read by trainingd.train.distributed (which imports torch; this must not)
REPO_ROOT = Path(__file__).resolve().parents[2]  # the folder holding trainingd/
KILL_AFTER_TERM_S = 10.0  # the stop ladder's last wait: SIGTERM ignored this long -> SIGKILL


OOM_EVENTS_ENV = "TRAININGD_OOM_EVENTS"  # tests: a file standing in for the kernel's counter


def oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed in this cgroup (None: not readable here).

    cgroup v2: ``memory.events`` of our cgroup; v1: ``memory.oom_control`` of the memory controller's cgroup.
    """
    candidates = [Path(os.environ[OOM_EVENTS_ENV])] if os.environ.get(OOM_EVENTS_ENV) else []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                candidates.append(Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events")
            elif "memory" in controllers.split(","):
                candidates.append(Path("/sys/fs/cgroup/memory") / path.lstrip("/") / "memory.oom_control")
    except (OSError, ValueError):
        pass
    candidates += [Path("/sys/fs/cgroup/memory.events"), Path("/sys/fs/cgroup/memory/memory.oom_control")]
    for f in candidates:
        try:
            for line in f.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def gpu_visible() -> bool:
    """An NVIDIA GPU this process may use, found without importing torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def machines_missing(log_tail: str) -> bool:
    """Did a launcher give up because not every machine joined its group? (torch elastic's static rendezvous,
    under torchrun and accelerate launch alike: "Timed out after N seconds waiting for clients. 1/2 clients
    joined.")"""
    return "waiting for clients" in log_tail and "clients joined" in log_tail


def launcher_argv(dist: Any, target: list[str], machine_rank: int = 0) -> list[str]:
    """The command that starts this machine's share of ``dist.num_processes`` trainer processes running ``target``
    (``-m module`` or a script) as one group: ``accelerate launch`` or ``torchrun`` (both run from this Python).
    ``machine_rank`` 0 is the daemon's machine; ``trainingd node`` runs the same command with its own rank."""
    n = int(dist.num_processes)
    machines = int(dist.num_machines)
    ip = dist.main_process_ip
    module = target[0] == "-m"
    if dist.config_file or gpu_visible():
        argv = [sys.executable, "-m", "accelerate.commands.launch"]
        if dist.config_file:
            argv += ["--config_file", str(dist.config_file)]
            if machine_rank:
                argv += ["--machine_rank", str(machine_rank)]
        else:
            # --multi_gpu for FSDP too: the trainer shards the model itself (FSDP2), the same on GPUs as on a CPU
            argv += ["--num_processes", str(n), "--num_machines", str(machines), "--multi_gpu"]
            if machines > 1:
                argv += ["--machine_rank", str(machine_rank), "--main_process_ip", str(ip)]
        if dist.main_process_port:
            argv += ["--main_process_port", str(dist.main_process_port)]
        if machines > 1:
            argv += ["--rdzv_conf", f"timeout={dist.join_timeout_s}"]
        return argv + (["--module", target[1]] if module else target)
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(machines), "--nproc-per-node",
            str(n // machines), "--max-restarts", "0"]
    if machines > 1:
        argv += ["--node-rank", str(machine_rank), "--master-addr", str(ip), "--master-port",
                 str(dist.main_process_port), "--rdzv-conf", f"timeout={dist.join_timeout_s}"]
    elif dist.main_process_port:
        argv += ["--master-addr", "127.0.0.1", "--master-port", str(dist.main_process_port)]
    else:
        argv += ["--standalone"]  # a free port of this machine
    return argv + (["--module", target[1]] if module else target)


def trainer_target() -> list[str]:
    script = os.environ.get(TRAINER_ENV)
    return [script] if script else ["-m", "trainingd.train"]


def job_args(home: Home, job: Job) -> list[str]:
    """The trainer's arguments for ``job`` (every machine of a group passes the same; ``--parent-pid`` aside)."""
    return ["--home", str(home.root), "--job-id", job.id, "--dataset", str(job.data_file),
            "--reason-file", str(result_path(job.dir))]


def trainer_argv(home: Home, job: Job, dist: Any = None) -> list[str]:
    args = job_args(home, job) + ["--parent-pid", str(os.getpid())]
    if is_group(dist):
        return launcher_argv(dist, trainer_target()) + args
    return [sys.executable] + trainer_target() + args


def trainer_env(group: bool) -> dict[str, str]:
    """The trainer's environment: the package importable from the repository, offline hub, launcher flag."""
    env = dict(os.environ)
    # cwd is the home, so the package must be importable from the repository.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    if group:
        env[LAUNCHER_ENV] = "1"
    else:
        env.pop(LAUNCHER_ENV, None)
    return env


def is_group(dist: Any) -> bool:
    return dist is not None and int(getattr(dist, "num_processes", 1) or 1) > 1


def tail(path: Path, lines: int = 30, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass
class TrainerProcess:
    """The one trainer process group of this daemon."""

    job: Job
    proc: subprocess.Popen
    started_at: str
    started_mono: float
    action: str = "run"
    stop_sent_at: float | None = None
    term_sent_at: float | None = None
    kill_sent_at: float | None = None
    launched: bool = False
    """Started through a launcher (several processes): the result file, not the launcher, names the outcome."""
    oom_kills_at_start: int | None = None

    @classmethod
    def start(cls, home: Home, job: Job, dist: Any = None) -> "TrainerProcess":
        """Start the trainer for ``job`` in a new session; its output goes to the training log."""
        clear_result(job.dir)  # never read an earlier attempt's result
        clear_progress(home)  # nor show an earlier attempt's progress
        env = trainer_env(is_group(dist))
        home.logs.mkdir(parents=True, exist_ok=True)
        with open(home.training_log, "ab") as out:
            out.write(f"\n===== {now_iso()} job {job.id} ({job.meta.get('original_name')}) attempt "
                      f"{job.meta.get('attempts', 0) + 1} =====\n".encode("utf-8", "backslashreplace"))
            out.flush()
            proc = subprocess.Popen(trainer_argv(home, job, dist), cwd=home.root, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        running = cls(job=job, proc=proc, started_at=now_iso(), started_mono=time.monotonic(),
                      launched=is_group(dist), oom_kills_at_start=oom_kills())
        try:
            fault_point("trainer_spawn")
            # Durable before anything else happens: a daemon killed now leaves a trainer the next one can find.
            machines = int(dist.num_machines) if is_group(dist) else 1
            write_trainer_record(home, TrainerRecord(pid=proc.pid, pgid=proc.pid, job_id=job.id,
                                                     started_at=running.started_at, daemon_pid=os.getpid(),
                                                     machines=machines, trainer_args=tuple(job_args(home, job))))
        except BaseException:
            running.signal_group(signal.SIGKILL)
            proc.wait()
            raise
        return running

    def reaped(self, home: Home) -> None:
        """The trainer has exited and been waited for: forget its record."""
        clear_trainer_record(home)

    def signal_group(self, sig: int) -> None:
        # A launcher starts its workers in sessions of their own: they are signalled one by one as well.
        workers = _descendants(self.proc.pid) if self.launched else []
        try:
            os.killpg(self.proc.pid, sig)  # start_new_session: the group id is the trainer's pid
        except ProcessLookupError:
            pass
        for pid in workers:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def walk_stop_ladder(self, now: float, grace_s: float) -> None:
        """Stopping: SIGTERM to the group once the stop command has had ``grace_s``, SIGKILL when SIGTERM is
        ignored for ``KILL_AFTER_TERM_S``."""
        since = now - (self.stop_sent_at or now)
        if self.term_sent_at is None and since >= grace_s:
            log.warning("job %s: trainer did not stop within %.0fs; sending SIGTERM", self.job.id, since)
            self.signal_group(signal.SIGTERM)
            self.term_sent_at = now
        elif (self.term_sent_at is not None and self.kill_sent_at is None
              and now - self.term_sent_at >= KILL_AFTER_TERM_S):
            log.warning("job %s: trainer ignored SIGTERM; sending SIGKILL", self.job.id)
            self.signal_group(signal.SIGKILL)
            self.kill_sent_at = now

    def exit_code(self, raw: int) -> int:
        """The job's exit code. A launcher exits 0 when every process ended as the group agreed (the main
        process's result file says how) and non-zero when any process failed; then the result's own code
        counts if the main process wrote a deliberate one (stopped, skipped, ...), else it is a crash."""
        if not self.launched:
            return raw
        from trainingd import exit_codes as ec

        name = read_result(result_path(self.job.dir)).get("exit")  # the code's name: "ok", "stopped", ...
        code = {n: c for c, n in ec.NAMES.items()}.get(name) if isinstance(name, str) else None
        if code is None:
            return ec.CRASH if raw == 0 else raw
        if raw == 0 or code not in (ec.OK, ec.CRASH):
            return code
        return raw if raw < 0 else ec.CRASH


    def after_exit(self, home: Home, code: int, batch_size: int) -> int | None:
        """A trainer the kernel's OOM killer ended (SIGKILL, and the cgroup's ``oom_kill`` count went up while it
        ran) retries with half the examples per forward pass: written where the trainer reads it
        (``<job checkpoints>/micro_batch.json``). Returns the new micro-batch, or None."""
        if self.kill_sent_at is not None or code == 0:
            return None
        killed = code == -signal.SIGKILL or (self.launched and "Signal 9 (SIGKILL)" in tail(home.training_log, 80))
        now = oom_kills()
        if not killed or now is None or self.oom_kills_at_start is None or now <= self.oom_kills_at_start:
            return None
        folder = home.job_checkpoints(self.job.id)
        current = (read_progress(home, self.job.id) or {}).get("micro_batch_size") or batch_size
        try:
            current = min(current, int(json.loads((folder / MICRO_BATCH_FILE).read_text())["micro_batch_size"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        if not isinstance(current, int) or current <= 1:
            return None
        smaller = current // 2
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / MICRO_BATCH_FILE, json.dumps({"micro_batch_size": smaller}) + "\n")
        log.warning("job %s: the kernel killed the trainer (the host ran out of memory): the retry runs %d examples "
                    "per forward pass instead of %d", self.job.id, smaller, current)
        return smaller


def _descendants(pid: int) -> list[int]:
    import psutil  # torch-free; only needed here

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def end_orphan_trainer(home: Home, grace_s: float) -> None:
    """A trainer of a killed daemon may still be finishing (or still loading); end it before starting another.

    It is found by the record written at spawn (``.trainer.json``), else by the pid in its progress file.
    """
    record = read_trainer_record(home)
    candidates = [record.pid if record else None, (read_progress(home) or {}).get("pid")]
    for pid in dict.fromkeys(p for p in candidates if isinstance(p, int) and p != os.getpid()):
        _end_trainer(pid, grace_s)
    clear_trainer_record(home)


def _end_trainer(pid: int, grace_s: float) -> None:
    import psutil  # torch-free; only needed here

    try:
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return
    # The pid may have been reused since: only a trainer's command line counts.
    if "trainingd.train" not in cmdline and (os.environ.get(TRAINER_ENV) or "\0") not in cmdline:
        return
    log.warning("a trainer from an earlier daemon is still running (pid %d); stopping it", pid)
    workers = _descendants(pid)  # a launcher's workers live in sessions of their own
    try:
        pgid = os.getpgid(pid)
        os.killpg(pgid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except psutil.TimeoutExpired:
        try:
            for worker in workers:
                try:
                    os.kill(worker, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
        except (ProcessLookupError, psutil.Error, OSError):
            pass
    except (ProcessLookupError, psutil.Error, OSError):
        pass
