"""The supervisor loop: one daemon per home owns the queue, the trainer process group and the status file.

    python3 training_daemon.py --home DIR [--once] [--max-jobs N] [--log-level INFO]
    bin/launch_training_daemon.sh --home DIR          # the same, in the background, with a pid file

Design (gunicorn's arbiter): signal handlers and control requests only record intent (paused,
stopping, skip); one ``tick()`` every ~0.25 s reads requests, polls the inbox, and ``reconcile()``
makes the world match the intent -- start the next job, tell the trainer to pause/run/stop/skip via
``control/trainer_command.json``, walk the stop ladder, and map the trainer's named exit code onto a
queue transition. Then it writes ``status/training_status.json``. The daemon never imports torch: the
trainer is a separate process (``python -m trainingd.train``) in its own session.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from trainingd import __version__
from trainingd.lifecycle import gate, home_guard, retention, snapshots
from trainingd import exit_codes as ec
from trainingd.lifecycle.ancestry import find_trained
from trainingd.config import EMBEDDED_BASE_MODEL, Config, ConfigError, load_config, locked_changes, resolve_base_model
from trainingd.contracts.checkpoint import ADAPTER_WEIGHTS, remove_checkpoints
from trainingd.contracts.adapter_state import adapter_state_stamp, read_adapter_state
from trainingd.contracts.adapter_state import trained_entries as adapter_trained
from trainingd.contracts.job import now_iso
from trainingd.contracts.progress import read_progress
from trainingd.contracts.requests import ACTIONS as REQUEST_ACTIONS
from trainingd.contracts.requests import Request, clear_emergency_stop, consume, is_emergency_stop, read_requests
from trainingd.contracts.result import read_result, result_path, summary_of
from trainingd.contracts.status import (StatusWriter, append_history, compose_status, empty_control, read_history,
                                        status_from_trainer)
from trainingd.contracts.trainer_command import clear_trainer_command, write_trainer_command
from trainingd.instance import InstanceLock, init_home, read_pid
from trainingd.daemon.attempts import START_KEY, checkpoint_step, made_progress, next_attempts
from trainingd.daemon.autogen import AutoGenerator
from trainingd.daemon.containment import Faults, printable
from trainingd.daemon.evaluation import Evaluator
from trainingd.daemon.intake import Intake
from trainingd.daemon.outcome import Facts, Outcome, decide, is_disk_full, needs_log, reason_text
from trainingd.checks.invariants import sweep_temp_files
from trainingd.logs import setup_logging
from trainingd.paths import Home
from trainingd.jobqueue import Job, JobQueue, QueueError
from trainingd.daemon.trainer_process import TrainerProcess, end_orphan_trainer, machines_missing, tail

log = logging.getLogger("trainingd.daemon.loop")

TICK_S = 0.25
KILL_AFTER_TERM_S = 10.0
IO_RETRY_S = 5.0
MAX_ACKS = 20

EXIT_TABLE = ec.DAEMON_HELP


def read_live_adapter_state(home: Home) -> dict | None:
    """``current_model/adapter_state.json``, or None when there is none or it is unreadable."""
    try:
        return read_adapter_state(home.current_model)
    except (ValueError, OSError):
        log.warning("current_model/adapter_state.json is unreadable; treating the adapter as empty")
        return None


def trained_entries(home: Home) -> list[dict]:
    """The ``trained`` list of ``current_model/adapter_state.json`` (jobs durably in the adapter)."""
    return adapter_trained(read_live_adapter_state(home))


def adapter_condition(home: Home, cfg: Config, pid: int) -> dict | None:
    """A locked key of config.json that differs from the live adapter: a condition of the whole home.

    Returns ``{"kind", "message", "changes": [{"key", "adapter", "config"}], "ways_out"}`` or None.
    """
    state = read_live_adapter_state(home)
    changes = locked_changes((state or {}).get("locked"), cfg.locked_values())
    if not changes:
        return None
    what = "; ".join(f"config key {c['key']!r} is {json.dumps(c['config'])} in config.json but the live adapter "
                     f"was made with {json.dumps(c['adapter'])}" for c in changes)
    return {"kind": "adapter_mismatch", "message": f"{what}: no job starts until this is resolved",
            "changes": changes, "ways_out": ways_out(pid)}


def ways_out(pid: int) -> list[str]:
    return [f"set it back in config.json, then reload: kill -HUP {pid} (or systemctl reload trainingd)",
            "or approve the new value for this adapter: python3 config_validator.py --approve (a LoRA shape "
            "change cannot be approved)",
            "or keep the old adapter as a snapshot and start a fresh one: trainingd adapter new [--keep-as NAME] "
            "(daemon paused or stopped; or by hand: stop the daemon, move current_model/ aside)"]


def gate_ways_out(pid: int) -> list[str]:
    return ["look at the rejected candidates: trainingd snapshot list (snapshots/*-rejected; each manifest's "
            "\"gate\" holds both scores) and the status's gate block",
            "publish one by hand if it is good after all: trainingd promote SNAPSHOT (the streak ends)",
            "or keep the live adapter and go on: training_controller.py resume (the streak starts again)",
            "or change the gate (gate.min_delta, gate.max_forgetting, gate.max_rejections_in_row, gate.enabled) "
            f"or the data in config.json, then reload: kill -HUP {pid}"]


# ------------------------------------------------------------------------------------------------ daemon
class Daemon:
    """One daemon's loop; ``run()`` returns the exit code. The caller holds the instance lock."""

    def __init__(self, home: Home, cfg: Config, *, once: bool = False, max_jobs: int | None = None,
                 tick_s: float = TICK_S):
        self.home = home
        self.cfg = cfg
        self.once = once
        self.max_jobs = max_jobs
        self.tick_s = tick_s
        self.queue = JobQueue(home)
        self.intake = Intake(home, self.queue, cfg)
        self.writer = StatusWriter(home)
        self.autogen = AutoGenerator(home)
        self.evaluator = Evaluator(home)
        self.faults = Faults(home)  # each subsystem of a tick fails alone (trainingd.daemon.containment)
        self.liveness = Liveness()
        self.started_at = now_iso()
        self.started_wall = time.time()  # control requests written before this are stale
        self.config_loaded_at = self.started_at
        self.config_reload_error: str | None = None
        self.condition: dict | None = None  # a condition of the whole home that holds every job
        self.gate_status: dict = {}  # the status file's gate block (refresh_gate)
        self._condition_stamp: tuple | None = None
        self.running: TrainerProcess | None = None
        self.resume_first: list[str] = []
        self.paused = False
        self.stopping = False
        self.stop_reason: str | None = None
        self.stop_file_seen = False
        self.skip_requested = False
        self.pending: list[Request] = []  # requests waiting to take effect before they are acknowledged
        self.jobs_ended = 0
        self.cmd_seq = 0
        self.exit_code = ec.OK
        self.finished = False
        self.final_status = "stopped"
        self.final_detail: str | None = None
        self._signal: int | None = None
        self._signals = 0
        self._reload = False
        previous = self.writer.previous
        prev_control = previous.get("control") if isinstance(previous.get("control"), dict) else {}
        # Acks outlive a restart so `--wait` on a stop finds its answer; pause state does not.
        self.control: dict[str, Any] = {
            **empty_control(),
            "last_request": prev_control.get("last_request"),
            "last_ack": prev_control.get("last_ack"),
            "acks": list(prev_control.get("acks") or [])[-MAX_ACKS:],
        }
        self.last_error: dict | None = previous.get("last_error") if isinstance(previous.get("last_error"),
                                                                                 dict) else None

    # -------------------------------------------------------------------------------------- life cycle
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signal = signum  # only record; the loop acts
        self._signals += 1

    def _on_hup(self, _signum: int, _frame: Any) -> None:
        self._reload = True  # only record; the loop reloads config.json

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hup)
        while True:
            try:
                self.startup()
                break
            except Exception as e:  # noqa: BLE001 - a start-up fault (a full disk) is waited out, never fatal
                self.wait_out_error(e, "daemon start-up")
                if self._signal is not None:
                    self.finish("stopped", f"signal {signal.Signals(self._signal).name} during start-up")
                    self.write_status(final=True)
                    return self.exit_code
        try:
            while not self.finished:
                try:
                    self.tick()
                except Exception as e:  # noqa: BLE001 - no fault of one tick may end the daemon
                    self.wait_out_error(e, "the daemon loop")
                    continue
                if self.finished:
                    break
                if self.stopping or "intake" in self.faults.active:
                    time.sleep(self.tick_s)  # the inbox is not read (or fails): its flag may stay set
                else:
                    # An inbox event wakes the loop early, so files are noticed well within a second.
                    self.intake.events.dirty.wait(self.tick_s)
        finally:
            self.intake.stop()
            self.autogen.stop()
            self.evaluator.stop()
            if self.running is not None and self.running.proc.poll() is None:
                # Only on an unexpected error: the trainer checkpoints and exits; it also exits when we die.
                log.error("daemon loop failed with a trainer running; asking it to stop")
                self._send(self.running, "stop")
        return self.exit_code

    def wait_out_error(self, e: Exception, where: str) -> None:
        """Log an error of the loop (ENOSPC above all), record it for the status, and back off."""
        if isinstance(e, OSError):
            self._error(f"I/O error in {where}: {e}; retrying in {IO_RETRY_S:.0f}s", None)
        else:
            log.exception("unexpected error in %s", where)
            self._error(f"internal error in {where}: {type(e).__name__}: {e}; retrying in {IO_RETRY_S:.0f}s "
                        "(traceback in the daemon log)", None)
        try:
            self.write_status()
        except Exception:  # noqa: BLE001 - the status file cannot be written either; the log has the error
            pass
        end = time.monotonic() + IO_RETRY_S
        while time.monotonic() < end and self._signal is None:
            time.sleep(self.tick_s)

    def startup(self) -> None:
        log.info("trainingd %s daemon starting for %s (pid %d)", __version__, self.home.root, os.getpid())
        self.resume_first = []
        self.queue.ensure_dirs()
        for job in self.queue.recover_incoming():
            log.info("recovered %s from queue/.incoming -> %s", job.id, job.state)
        clear_trainer_command(self.home)
        if is_emergency_stop(self.home):
            # A .stop left behind by a crashed daemon must not block every later start.
            log.warning("removing a stale .stop left by an earlier run")
            clear_emergency_stop(self.home)
        end_orphan_trainer(self.home, self.cfg.stop_grace_s)
        # What a kill left half-written (no process of this home writes them now); housekeeping, never fatal.
        self.faults.run("sweep", sweep_temp_files, self.home)
        trained_ids = {t.get("job_id") for t in trained_entries(self.home)}
        rejected = snapshots.rejected_snapshots(self.home)
        for job in self.queue.jobs(["processing"]):
            if job.id in rejected and job.id not in trained_ids:
                log.info("job %s was rejected by the gate before a crash (snapshot %s); completing it", job.id,
                         rejected[job.id])
                self._retire_checkpoints(job)
                self.queue.complete(job, result=job.meta.get("result") or {"recovered": True},
                                    gate_outcome=gate.REJECTED, gate_snapshot=rejected[job.id])
                append_history(self.home, job_id=job.id, file=job.meta.get("original_name"), state="done",
                               result=gate.REJECTED, reason=f"rejected by the gate (snapshot {rejected[job.id]})",
                               summary={})
            elif job.id in trained_ids:
                log.info("job %s was published before a crash; completing it", job.id)
                self._retire_checkpoints(job)  # the trainer was killed before it removed them
                done = self.queue.complete(job, result=job.meta.get("result") or {"recovered": True})
                snapshots.after_job(self.home, done, job.meta.get("result"), self.cfg.to_dict(),
                                    self.cfg.keep_snapshots)
                append_history(self.home, job_id=job.id, file=job.meta.get("original_name"), state="done",
                               result="ok", summary={})
            else:
                # Counted as an attempt unless its checkpoint advanced meanwhile, so a trainer that takes its
                # daemon down with it cannot loop forever, while a long job killed now and then still finishes.
                attempts = next_attempts(self.home, job)
                if attempts >= self.cfg.max_attempts:
                    reason = (f"the daemon ended {attempts} times in a row while this job was training, with no "
                              "new checkpoint in between; giving up.\n"
                              f"Last lines of logs/training_output.log:\n{tail(self.home.training_log)}\n"
                              f"Fix the cause, then: training_queue.py retry {job.id}")
                    self.queue.fail(job, reason, attempts=attempts)
                    self._error(f"job {job.id} failed after {attempts} attempts (daemon ended while training)",
                                job.id)
                    append_history(self.home, job_id=job.id, file=job.meta.get("original_name"), state="failed",
                                   result="daemon_ended", reason=reason, summary={})
                    continue
                self.queue.update_meta(job, attempts=attempts)
                log.info("job %s was being trained when the last daemon ended (%s); resuming it first", job.id,
                         f"attempt {attempts} of {self.cfg.max_attempts}" if attempts else
                         f"its checkpoint advanced to step {checkpoint_step(self.home, job.id)}: no attempt counted")
                self.resume_first.append(job.id)
        self.refresh_gate()
        if self.intake.observer is None:
            self.intake.start()
        self.intake.poll(force=True)
        self.write_status()

    def tick(self) -> None:
        """One pass of the loop. Each subsystem (config, control, intake, evaluation, queue, autogen, status) fails
        alone: its error is logged once, shown in the status's ``faults``, and the others still run."""
        contain = self.faults.run
        if self._reload:
            self._reload = False
            contain("config", self.reload_config)
        if self._signal is not None and not self.stopping:
            self.request_stop(f"signal {signal.Signals(self._signal).name}")
        if self._signals >= 2 and self.running is not None and self.running.term_sent_at is None:
            # A second SIGTERM/Ctrl-C means "now": skip the grace period of the stop ladder.
            log.warning("second signal: terminating the trainer without waiting for its checkpoint")
            self.running.signal_group(signal.SIGTERM)
            self.running.term_sent_at = time.monotonic()
        contain("control", self.read_control)
        if not self.stopping:
            for job in contain("intake", self.intake.poll) or []:
                if job.state == "failed":
                    self._error(f"{printable(str(job.meta.get('original_name')))}: {job.meta.get('reason')}", job.id)
        contain("evaluation", self.evaluator.poll)
        # With no trainer to supervise, a queue that fails (a job that cannot start) waits before it tries again.
        contain("queue", self.reconcile, backoff_s=0.0 if self.running is not None else IO_RETRY_S)
        if not self.stopping and not self.finished:
            contain("autogen", self.autogen.tick, self.cfg.auto_generate,
                    pending_jobs=sum(self.queue.counts()["pending"].values()),
                    may_start=not self.paused and self.condition is None, queue=self.queue)
        contain("status", self.write_status, final=self.finished)

    def read_control(self) -> None:
        self.apply_requests()
        if not self.stopping and is_emergency_stop(self.home):
            self.stop_file_seen = True
            self.request_stop(".stop file")

    def reload_config(self) -> None:
        """SIGHUP: take config.json again; an invalid one is refused (the reason in the status), the old kept."""
        try:
            if not os.path.isfile(self.home.config):
                # Not the built-in defaults: a deleted or replaced file is a mistake, not a wish to reset.
                raise ConfigError(f"{self.home.config} is missing or not a file")
            new = check_config(self.home)
        except ConfigError as e:
            self.config_reload_error = str(e)
            self._error(f"config.json reload refused, keeping the running configuration: {e}", None)
            return
        old, now = self.cfg.to_dict(), new.to_dict()
        changed = [f"{k}: {json.dumps(old[k])} -> {json.dumps(now[k])}" for k in now if old.get(k) != now[k]]
        log.info("config reloaded%s", (": " + "; ".join(changed)) if changed else " (no change)")
        self.cfg = new
        self.intake.cfg = new
        self.config_reload_error = None
        self.config_loaded_at = now_iso()
        self._condition_stamp = None  # check the adapter against the new config

    def update_condition(self) -> None:
        """Re-check the home's condition when the config or the live adapter changed since the last look."""
        stamp = self._adapter_stamp()
        if stamp == self._condition_stamp:
            return
        trainer_said = self.condition is not None and self.condition.get("source") == "trainer"
        if trainer_said and self._condition_stamp is not None:
            log.info("the live adapter changed; trying again")
        self._condition_stamp = stamp
        before = self.condition
        self.condition = adapter_condition(self.home, self.cfg, os.getpid()) or self.refresh_gate()
        if self.condition is not None and self.condition != before:
            self._error(self.condition["message"], None)
        elif self.condition is None and before is not None:
            log.info("the condition of the home is resolved; jobs start again")

    def refresh_gate(self) -> dict | None:
        """Re-read the gate's streak and last decision from the history; the ``regressing`` condition or None."""
        try:
            history = read_history(self.home)
        except (OSError, ValueError) as e:
            log.warning("status/history.jsonl unreadable (%s); the gate's streak is not known", e)
            history = []
        g = self.cfg.gate
        self.gate_status = gate.status_block(history, enabled=g.enabled, limit=g.max_rejections_in_row)
        if not g.enabled:
            return None
        return gate.regressing_condition(self.gate_status["rejections_in_row"], g.max_rejections_in_row,
                                         gate_ways_out(os.getpid()))

    def reset_gate_streak(self, why: str) -> None:
        """A person looked (resume while regressing): the streak of rejections starts again."""
        from trainingd.atomic_ops import append_jsonl

        append_jsonl(self.home.history, {"kind": gate.STREAK_RESET, "why": why, "at": now_iso()})
        log.info("the gate's streak of rejections is reset (%s); jobs start again", why)
        self.condition = None
        self.refresh_gate()

    def _adapter_stamp(self) -> tuple:
        return adapter_state_stamp(self.home.current_model)

    def request_stop(self, why: str) -> None:
        if not self.stopping:
            log.info("stop requested (%s)", why)
        self.stopping = True
        self.stop_reason = self.stop_reason or why

    def finish(self, status: str, detail: str | None) -> None:
        self.finished = True
        self.final_status = status
        self.final_detail = detail
        log.info("daemon exiting (%s%s)", status, f": {detail}" if detail else "")

    # -------------------------------------------------------------------------------------- control
    def apply_requests(self) -> None:
        for req in read_requests(self.home):
            kept = consume(req)
            if req.action == "rejected":
                log.warning("control/requests/%s is %s: set aside as %s (never opened)", printable(req.path.name),
                            req.reason, printable(str(kept.relative_to(self.home.root))) if kept else "nothing")
                continue
            if req.action == "invalid":
                log.warning("dropped an invalid control request file %s", printable(req.path.name))
                continue
            if req.action not in REQUEST_ACTIONS:
                # Answered, so a writer waiting for its id is told instead of timing out.
                self.ack(req, f"refused: unknown action {req.action!r}; expected one of {', '.join(REQUEST_ACTIONS)}")
                continue
            if req.created_at < self.started_wall:
                # Written for an earlier daemon (e.g. just as it exited): answered, never applied.
                log.warning("control request %s (%s) was written before this daemon started; not applied",
                            req.id, req.action)
                self.ack(req, "stale: written before this daemon started; not applied")
                continue
            log.info("control request %s: %s", req.id, req.action)
            self.control["last_request"] = {"id": req.id, "action": req.action, "at": now_iso()}
            if req.action == "pause":
                self._supersede("resume", "superseded by pause")
                self.paused = True
            elif req.action == "resume":
                self._supersede("pause", "superseded by resume")
                self.paused = False
                if self.condition is not None and self.condition.get("kind") == gate.CONDITION:
                    self.reset_gate_streak(f"resume request {req.id}")
            elif req.action == "skip":
                if self.running is None:
                    self.ack(req, "nothing to skip")
                    continue
                self.skip_requested = True
            elif req.action == "stop":
                self.request_stop(f"stop request {req.id}")
            self.pending.append(req)

    def _supersede(self, action: str, result: str) -> None:
        for req in [r for r in self.pending if r.action == action]:
            self.ack(req, result)

    def ack(self, req: Request, result: str) -> None:
        entry = {"id": req.id, "action": req.action, "result": result, "at": now_iso()}
        self.control["last_ack"] = entry
        self.control["acks"] = (self.control["acks"] + [entry])[-MAX_ACKS:]
        if req in self.pending:
            self.pending.remove(req)
        log.info("control request %s (%s) acknowledged: %s", req.id, req.action, result)

    def _ack_all(self, action: str, result: str) -> None:
        for req in [r for r in self.pending if r.action == action]:
            self.ack(req, result)

    # -------------------------------------------------------------------------------------- reconcile
    def reconcile(self) -> None:
        r = self.running
        if r is not None:
            code = r.proc.poll()
            if code is None:
                self.steer(r)
                return
            code = r.exit_code(code)  # a launched group: the main process's result names the outcome
            r.after_exit(self.home, code, self.cfg.micro_batch_size or self.cfg.batch_size)  # host OOM: halve
            self.running = None
            r.reaped(self.home)
            try:
                self.on_trainer_exit(r, code)
            except OSError:
                # The job could not be moved out of processing/: run it again first once the disk recovers
                # (the trainer republishes or fails the same way; a trained job is never trained twice).
                self.resume_first.insert(0, r.job.id)
                raise
        # No trainer runs from here on.
        self._ack_all("pause", "paused")
        self._ack_all("resume", "resumed")
        self._ack_all("skip", "nothing to skip")
        self.skip_requested = False
        if self.stopping:
            self._ack_all("stop", "stopped")
            if self.stop_file_seen or is_emergency_stop(self.home):
                clear_emergency_stop(self.home)
            if self.exit_code == ec.CONFIG_ERROR:
                self.finish("error", (self.last_error or {}).get("message"))
            else:
                self.finish("stopped", self.stop_reason)
            return
        if self.max_jobs is not None and self.jobs_ended >= self.max_jobs:
            if self.evaluator.maybe_start(self.cfg):
                return  # the evaluation the last job made due runs first, as with --once
            self.finish("stopped", f"--max-jobs {self.max_jobs} reached")
            return
        if self.paused:
            return
        self.update_condition()
        if self.condition is None or self.condition.get("kind") in home_guard.KINDS:
            self.condition = home_guard.check(self.home, self.cfg.min_free_disk_gb, self.condition, self._error)
        if self.condition is not None:
            if self.once:  # nothing will change while we wait: say why and leave (never retried in a loop)
                self.exit_code = ec.CONFIG_ERROR
                self.finish("error", self.condition["message"])
            return
        if self.evaluator.maybe_start(self.cfg):
            return  # the live adapter is being evaluated: the next job waits for it
        try:
            retention.maybe_run_daily(self.home, self.cfg)  # between jobs, when config.json asks for it
        except Exception as e:  # noqa: BLE001 - housekeeping never stops training
            log.error("daily clean failed: %s", e)
        while not self.finished:
            job = self._next_job()
            if job is None:
                counts = self.queue.counts()
                if self.once and not self.intake.has_candidates() and not sum(counts["pending"].values()):
                    self.finish("stopped", "queue empty (--once)")
                return
            broken = job.meta.get("broken")
            if broken:
                reason = (f"{broken}\nThe data file is kept in this folder. Fix or delete job.json "
                          f"(the unreadable one is kept as job.json.broken), then: training_queue.py retry {job.id}")
                self.queue.fail(job, reason)
                self._error(f"job {job.id}: {broken}", job.id)
                append_history(self.home, job_id=job.id, file=job.meta.get("original_name"), state="failed",
                               result="bad_job_json", reason=reason, summary={})
                self.jobs_ended += 1
                continue
            if self._is_duplicate(job):
                if self.max_jobs is not None and self.jobs_ended >= self.max_jobs:
                    self.finish("stopped", f"--max-jobs {self.max_jobs} reached")
                continue
            try:
                self.start_trainer(job)
            except OSError:
                self._put_back(job)
                raise
            except Exception as e:  # noqa: BLE001 - about this job (e.g. its name): an attempt, never a loop
                self._start_failed(job, e)
                continue
            except BaseException:
                self._put_back(job)
                raise
            return

    def _start_failed(self, job: Job, e: Exception) -> None:
        """The trainer of ``job`` could not be started for a reason that is not the home's (not an OSError):
        counted as an attempt, so a job that can never start is failed instead of blocking the queue."""
        log.error("job %s: the trainer could not be started", job.id, exc_info=e)
        attempts = int(job.meta.get("attempts") or 0) + 1
        what = f"the trainer could not be started: {type(e).__name__}: {printable(str(e))}"
        if attempts >= self.cfg.max_attempts:
            reason = (f"{what} ({attempts} attempts); giving up.\nThe traceback is in logs/daemon.log. Fix the "
                      f"cause, then: training_queue.py retry {job.id}")
            self.queue.fail(job, reason, attempts=attempts)
            self._error(f"job {job.id} failed: {what}", job.id)
            append_history(self.home, job_id=job.id, file=printable(str(job.meta.get("original_name"))),
                           state="failed", result="start_failed", reason=reason, summary={})
            self.jobs_ended += 1
        else:
            self.queue.requeue(job, attempts=attempts)
            self._error(f"job {job.id}: {what} (attempt {attempts} of {self.cfg.max_attempts})", job.id)

    def _put_back(self, job: Job) -> None:
        """A claimed job whose trainer could not be started goes back to the head of its queue."""
        try:
            self.queue.requeue(job)
        except Exception as e:  # noqa: BLE001 - still in processing/: take it first next time, claim no other
            log.error("job %s could not be put back into pending (%s); it is retried first", job.id, e)
            if job.id not in self.resume_first:
                self.resume_first.insert(0, job.id)

    def _next_job(self) -> Job | None:
        while self.resume_first:
            job_id = self.resume_first.pop(0)
            try:
                job = self.queue.get(job_id)
            except QueueError:
                continue
            if job.state == "processing":
                return job
        for job in self.queue.jobs(["processing"]):
            # Left there by an I/O error right after a claim's rename: it is ours and goes first (never two).
            return job
        return self.queue.claim_next()

    def _is_duplicate(self, job: Job) -> bool:
        """Dedupe: a job whose content is already in the live model (its adapter or a consolidated base below it,
        ``trainingd.lifecycle.ancestry``) goes straight to done/."""
        sha = job.meta.get("sha256")
        if not self.cfg.dedupe or job.meta.get("force") or not sha:
            return False
        hit = find_trained(self.home, sha, base_model=self.cfg.base_model, exclude_job=job.id)
        if hit is None:
            return False
        earlier = hit.get("job_id")
        log.info("job %s is a duplicate of job %s (same sha256, trained into the %s); not trained again", job.id,
                 earlier, hit.get("where"))
        self.queue.complete(job, duplicate_of=earlier, result={"duplicate_of": earlier})
        append_history(self.home, job_id=job.id, file=job.meta.get("original_name"), state="done",
                       result="duplicate", reason=f"duplicate of {earlier}", summary={})
        self.jobs_ended += 1
        return True

    def start_trainer(self, job: Job) -> None:
        # Where its checkpoint stands now: an ending with no result counts as an attempt only if it did not advance.
        job = self.queue.update_meta(job, **{START_KEY: checkpoint_step(self.home, job.id)})
        self.cmd_seq += 1
        write_trainer_command(self.home, job.id, "run", self.cmd_seq, config=self.cfg.to_dict())
        self.running = TrainerProcess.start(self.home, job, self.cfg.distributed)
        log.info("job %s: trainer started (pid %d) on %s", job.id, self.running.proc.pid,
                 job.meta.get("original_name"))

    def _send(self, r: TrainerProcess, action: str) -> None:
        self.cmd_seq += 1
        write_trainer_command(self.home, r.job.id, action, self.cmd_seq, config=self.cfg.to_dict())
        r.action = action
        log.info("job %s: trainer command -> %s", r.job.id, action)

    def steer(self, r: TrainerProcess) -> None:
        """Make the running trainer match the intent, walk the stop ladder, acknowledge what took effect."""
        desired = "stop" if self.stopping else "skip" if self.skip_requested else "pause" if self.paused else "run"
        now = time.monotonic()
        if desired != r.action:
            self._send(r, desired)
            if desired == "stop":
                r.stop_sent_at = now
        if self.stopping:
            since = now - (r.stop_sent_at or now)
            if r.term_sent_at is None and since >= self.cfg.stop_grace_s:
                log.warning("job %s: trainer did not stop within %.0fs; sending SIGTERM", r.job.id, since)
                r.signal_group(signal.SIGTERM)
                r.term_sent_at = now
            elif r.term_sent_at is not None and r.kill_sent_at is None and now - r.term_sent_at >= KILL_AFTER_TERM_S:
                log.warning("job %s: trainer ignored SIGTERM; sending SIGKILL", r.job.id)
                r.signal_group(signal.SIGKILL)
                r.kill_sent_at = now
        progress = read_progress(self.home, r.job.id)
        trainer_state = (progress or {}).get("status")
        if trainer_state == "paused":
            self._ack_all("pause", "paused")
        elif progress is not None and not self.paused:
            self._ack_all("resume", "resumed")

    # -------------------------------------------------------------------------------------- trainer exit
    def on_trainer_exit(self, r: TrainerProcess, code: int) -> None:
        """Gather the facts of a trainer's exit, decide what it means (``outcome.decide``) and carry it out."""
        job = r.job
        name = ec.name_of(code)
        seconds = round(time.monotonic() - r.started_mono, 3)
        result = read_result(result_path(job.dir))
        summary = summary_of(result)
        log.info("job %s: trainer exited %s (%d) after %.1fs", job.id, name, code, seconds)
        skip_wanted = self.skip_requested
        self.skip_requested = False
        if summary.get("notice"):
            log.warning("job %s: %s", job.id, summary["notice"])
        ended_by_us = r.term_sent_at is not None or r.stop_sent_at is not None
        gate_decision = summary.get("gate") if isinstance(summary.get("gate"), dict) else {}
        log_facts: dict[str, Any] = {}
        if needs_log(code, skip_wanted, self.stopping, ended_by_us):
            short_tail = tail(self.home.training_log, lines=15)
            log_facts = {"machines_missing": r.launched and machines_missing(short_tail),
                         "disk_full": is_disk_full(result, short_tail), "log_tail": tail(self.home.training_log)}
        facts = Facts(code=code, job_id=job.id, reason=reason_text(result, name), skip_wanted=skip_wanted,
                      stopping=self.stopping, ended_by_us=ended_by_us, attempts=int(job.meta.get("attempts") or 0),
                      progressed=made_progress(self.home, job),
                      max_attempts=self.cfg.max_attempts, join_timeout_s=self.cfg.distributed.join_timeout_s,
                      home=str(self.home.root), gate_outcome=gate_decision.get("outcome"),
                      gate_reason=gate_decision.get("reason"), **log_facts)
        self.apply_outcome(job, decide(facts), result=result, summary=summary, seconds=seconds)

    def apply_outcome(self, job: Job, o: Outcome, *, result: dict, summary: dict, seconds: float) -> None:
        """Carry out the decision on a trainer's exit: the transition first, then its follow-ups."""
        attempts = {} if o.attempts is None else {"attempts": o.attempts}
        gate_decision = summary.get("gate") if isinstance(summary.get("gate"), dict) else None
        if o.state == "done" and o.gate_rejected:
            self.queue.complete(job, result=summary, gate_outcome=gate.REJECTED,
                                gate_snapshot=(gate_decision or {}).get("snapshot"))
        elif o.state == "done":
            done = self.queue.complete(job, result=summary,
                                       **({"gate_outcome": gate_decision.get("outcome")} if gate_decision else {}))
            snapshots.after_job(self.home, done, summary, self.cfg.to_dict(), self.cfg.keep_snapshots)
        elif o.state == "failed":
            self.queue.fail(job, o.reason or "", **({"result": result or None} if o.keep_result else {}), **attempts)
        else:
            self.queue.requeue(job, **attempts)
        if o.retire_checkpoints:
            self._retire_checkpoints(job)
        if o.result is not None:
            append_history(self.home, job_id=job.id, file=job.meta.get("original_name"), state=o.state,
                           result=o.result, reason=o.reason, summary=summary, seconds=seconds)
            self.jobs_ended += 1
        if o.snapshot_and_evaluate:
            self.evaluator.job_done(job.id, self.cfg, gate_decision)
        if o.state == "done":
            held = self.refresh_gate()  # the streak of rejections and the last decision, for the status
            if held is not None:
                self.condition = held  # held until the adapter, the config or a resume changes
                self._condition_stamp = self._adapter_stamp()
                self._error(held["message"], job.id)
        if o.condition is not None:
            self.condition = {"kind": o.condition, "message": o.error, "changes": [],
                              "ways_out": ways_out(os.getpid()), "source": "trainer"}
            self._condition_stamp = self._adapter_stamp()  # held until the adapter or the config changes
        if o.note:
            log.info("%s", o.note)
        for action, ack in o.acks:
            self._ack_all(action, ack)
        if o.error:
            self._error(o.error, job.id)
        if o.stop_for_config:
            self.exit_code = ec.CONFIG_ERROR
            self.request_stop("configuration error")
        if o.disk_full:
            raise OSError(errno.ENOSPC, o.disk_full)

    def _retire_checkpoints(self, job: Job) -> None:
        """A skipped job's checkpoints are discarded, as the trainer does when it honours the skip."""
        remove_checkpoints(self.home.job_checkpoints(job.id))

    def _error(self, message: str, job_id: str | None) -> None:
        self.last_error = {"message": message, "job_id": job_id, "at": now_iso()}
        log.error("%s", message)

    # -------------------------------------------------------------------------------------- status
    def write_status(self, *, final: bool = False) -> dict:
        r = self.running
        progress = read_progress(self.home, r.job.id) if r is not None else None
        job_doc = None
        if final:
            state, detail = self.final_status, self.final_detail
        elif r is not None:
            state, detail = status_from_trainer(progress)
            machines = self.cfg.distributed.num_machines if r.launched else 1
            if progress is None and machines > 1:  # the launcher waits until every machine has joined
                detail = (f"starting the trainer: waiting for all {machines} machines to join (each other machine "
                          f"runs trainingd node --home {self.home.root} --machine-rank R)")
            if self.stopping:
                state, detail = "stopping", f"waiting for the trainer to checkpoint ({self.stop_reason})"
            elif self.skip_requested:
                detail = "skipping the current job"
            elif self.paused and state != "paused":
                detail = "pausing at the next step"
        elif self.stopping:
            state, detail = "stopping", self.stop_reason
        elif self.paused:
            state, detail = "paused", "no job will start until resume"
        elif self.condition is not None:
            state, detail = "paused", self.condition["message"] + ". Ways out: " + "; ".join(
                self.condition["ways_out"])
        elif self.evaluator.proc is not None:
            state, detail = "evaluating", f"held-out evaluation of the adapter after job {self.evaluator.job_id}"
        else:
            state, detail = "idle", "waiting for files in inbox/"
        counts = self.queue.counts()
        if state == "idle" and r is None and counts.get("processing"):
            # A claimed job with no trainer (one that could not be started or put back, e.g. on a full disk) is
            # not "waiting for files": say so, with the error that holds it.
            stuck = ", ".join(j.id for j in self.queue.jobs(["processing"])) or "a job"
            why = (self.last_error or {}).get("message")
            state, detail = "error", (f"job {stuck} is in queue/processing/ with no trainer running"
                                      + (f": {why}" if why else "") + "; it is retried first")
        if r is not None:
            m = r.job.meta
            job_doc = {"id": r.job.id, "file": m.get("original_name"), "sha256": m.get("sha256"),
                       "priority": r.job.priority, "started_at": r.started_at}
        adapter = self.home.current_model / ADAPTER_WEIGHTS
        control = {**self.control, "paused": self.paused, "stopping": self.stopping}
        doc = compose_status(
            daemon={"pid": os.getpid(), "version": __version__, "started_at": self.started_at,
                    "home": str(self.home.root), "config_loaded_at": self.config_loaded_at,
                    "config_reload_error": self.config_reload_error},
            status=state, status_detail=detail, job=job_doc, progress=progress, queue=counts,
            model={"base": self.cfg.base_model, "adapter": str(adapter.parent) if adapter.exists() else None,
                   "model_display_name": self.cfg.model_display_name},
            control=control, last_error=self.last_error)
        doc["condition"] = self.condition
        doc["auto_generate"] = self.autogen.status()
        doc["eval"] = self.evaluator.status()
        doc["gate"] = self.gate_status
        doc["liveness"] = self.liveness.update(self.queue, idle=state == "idle",
                                               stall_after_s=self.cfg.stall_after_s)
        doc["faults"] = self.faults.status()
        return self.writer.write(doc, durable=final)


class Liveness:
    """Has the head of the queue moved? A head that sits while the daemon is idle for ``stall_after_s`` is a stuck
    queue (the status's ``liveness``; the doctor and ``state_tracker.py --check`` report it), whatever the cause."""

    def __init__(self) -> None:
        self.head: str | None = None
        self.since_mono = time.monotonic()
        self.since: str = now_iso()
        self.logged = False

    def update(self, queue: JobQueue, *, idle: bool, stall_after_s: float) -> dict[str, Any]:
        try:
            _, first = queue.page("pending", 0, 1)
            head = first[0].id if first else None
        except Exception:  # noqa: BLE001 - the queue's own fault is reported by the queue subsystem
            head = self.head
        if head != self.head or not idle or head is None:
            if self.logged and head is not None:
                log.info("the head of the queue moves again")
            self.head, self.since_mono, self.since, self.logged = (head if idle else None), time.monotonic(), \
                now_iso(), False
        waited = time.monotonic() - self.since_mono
        stalled = idle and self.head is not None and waited >= stall_after_s
        problem = fix = None
        if stalled:
            problem = (f"the head of the queue (job {self.head}) has not moved for {waited:.0f} s while the "
                       "daemon is idle")
            fix = ("see faults and last_error in status/training_status.json and logs/daemon.log; fix what they "
                   "name (the job starts by itself), or fail the job: training_queue.py remove "
                   f"{self.head}")
            if not self.logged:
                log.error("%s; %s", problem, fix)
                self.logged = True
        return {"head": self.head, "head_since": self.since if self.head else None, "stalled": stalled,
                "stall_after_s": stall_after_s, "problem": problem, "fix": fix}


# ------------------------------------------------------------------------------------------------ CLI
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


def check_config(home: Home) -> Config:
    """Load and validate the home's config; raises ConfigError naming the key."""
    cfg = load_config(home.config)
    if cfg.base_model != EMBEDDED_BASE_MODEL:
        resolve_base_model(cfg, home.root)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.home is not None and not args.home.strip():
        parser.error("argument --home: empty; give a folder (--home . for the current one)")
    if args.max_jobs is not None and args.max_jobs < 1:
        parser.error(f"argument --max-jobs: {args.max_jobs} is not a number of jobs (1 or more)")
    home = Home.at(args.home)
    try:
        init_home(home)
    except OSError as e:
        print(f"trainingd: cannot use {home.root} as a home: {e}", file=sys.stderr)
        return ec.CONFIG_ERROR
    lock = InstanceLock(home)
    if not lock.acquire():
        pid = read_pid(home)
        print(f"trainingd daemon already running for {home.root} (pid {pid if pid else 'unknown'})", file=sys.stderr)
        return ec.ALREADY_RUNNING
    setup_logging(home, args.log_level)
    try:
        try:
            cfg = check_config(home)
        except ConfigError as e:
            log.error("config error: %s", e)
            StatusWriter(home).write(compose_status(
                daemon={"pid": os.getpid(), "version": __version__, "started_at": now_iso(), "home": str(home.root)},
                status="error", status_detail=f"config error: {e}", queue=JobQueue(home).counts(),
                last_error={"message": f"config error: {e}", "job_id": None, "at": now_iso()}), durable=True)
            return ec.CONFIG_ERROR
        return Daemon(home, cfg, once=args.once, max_jobs=args.max_jobs).run()
    finally:
        lock.release()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
