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

import errno
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from trainingd import __version__
from trainingd.lifecycle import gate, home_guard, retention
from trainingd import exit_codes as ec
from trainingd.config import EMBEDDED_BASE_MODEL, Config, ConfigError, load_config, resolve_base_model
from trainingd.contracts.adapter_state import adapter_state_stamp
from trainingd.contracts.job import now_iso
from trainingd.contracts.progress import read_progress
from trainingd.contracts.requests import clear_emergency_stop, is_emergency_stop
from trainingd.contracts.result import read_result, result_path, summary_of
from trainingd.contracts.status import StatusWriter, compose_status
from trainingd.contracts.trainer_command import write_trainer_command
from trainingd.instance import InstanceLock, init_home, read_pid
from trainingd.daemon import job_start, recovery, trainer_exit
from trainingd.daemon.attempts import START_KEY, checkpoint_step
from trainingd.daemon.autogen import AutoGenerator
from trainingd.daemon.control import ControlRequests
from trainingd.daemon.conditions import adapter_condition, gate_view, reset_gate_streak, ways_out
from trainingd.daemon.containment import Faults, printable
from trainingd.daemon.evaluation import Evaluator
from trainingd.daemon.history_fold import JsonlFold
from trainingd.daemon.intake import Intake
from trainingd.daemon.options import build_parser
from trainingd.daemon.outcome import Outcome, decide
from trainingd.daemon.status_view import Liveness, status_doc
from trainingd.logs import setup_logging
from trainingd.paths import Home
from trainingd.jobqueue import Job, JobQueue
from trainingd.daemon.trainer_process import TrainerProcess

log = logging.getLogger("trainingd.daemon.loop")

TICK_S = 0.25
IO_RETRY_S = 5.0


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
        self.disk_full: dict | None = None  # the disk ran full: held until a probe write fits (check_room)
        self.gate_status: dict = {}  # the status file's gate block (refresh_gate)
        self._gate_fold = JsonlFold(home.history, lambda: (0, None), gate.history_step)
        self._level: int | None = None  # the curriculum's level after the last job (end_streak_on_a_new_level)
        self._condition_stamp: tuple | None = None
        self.running: TrainerProcess | None = None
        self.resume_first: list[str] = []
        self.paused = False
        self.stopping = False
        self.stop_reason: str | None = None
        self.stop_file_seen = False
        self.skip_requested = False
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
        self.requests = ControlRequests(home, previous, self.started_wall)
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
        if isinstance(e, OSError) and e.errno in home_guard.DISK_FULL and self.disk_full is None:
            self.disk_full = home_guard.disk_full_condition(self.home, where, e)
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
        recovery.tidy_after_last_run(self.home, self.queue, self.cfg, self.faults)
        self.resume_first = recovery.settle_processing(self.home, self.queue, self.cfg, self._error)
        self.refresh_gate()
        self._level = self.autogen.curriculum(self.cfg.auto_generate)["level"]
        if self.intake.observer is None:
            self.intake.start()
        self.intake.poll(force=True)
        self.write_status()

    def tick(self) -> None:
        """One pass of the loop. Each subsystem (config, control, intake, evaluation, queue, autogen, status) fails
        alone: its error is logged once, shown in the status's ``faults``, and the others still run."""
        contain = self.faults.run
        if self.disk_full is not None:
            contain("disk", self.check_room)
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
                    may_start=not self.paused and self.held_by is None, queue=self.queue)
        contain("status", self.write_status, final=self.finished)

    @property
    def held_by(self) -> dict | None:
        """The condition of the whole home that holds every job, if any: a full disk first, then the others."""
        return self.disk_full or self.condition

    def check_room(self) -> None:
        """While the disk is full: lift the condition once a probe write fits (a job that still does not fit
        sets it again)."""
        if home_guard.has_room(self.home):
            log.info("the disk of the home has room again; jobs start again")
            self.disk_full = None

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
        self.gate_status, held = gate_view(self.home, self.cfg, self._gate_fold)
        return held

    def end_streak_on_a_new_level(self) -> None:
        """When this job raised the curriculum's level, the gate's streak of rejections ends: they were measured on
        the old level's held-out set, and the next candidate is compared on the new one, its champion scored afresh.
        (A plateau of rejections is what raises the level; holding as ``regressing`` then would stop the stream.)"""
        if not self.cfg.auto_generate.curriculum.enabled:
            return
        before = self._level
        self._level = self.autogen.curriculum(self.cfg.auto_generate)["level"]
        if before is not None and self._level > before:
            self.refresh_gate()
            if self.gate_status.get("rejections_in_row"):
                reset_gate_streak(self.home, f"the curriculum rose to level {self._level}: a new held-out set")

    def reset_gate_streak(self, why: str) -> None:
        """A person looked (resume while regressing): the streak of rejections starts again."""
        reset_gate_streak(self.home, why)
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
        for req in self.requests.admitted():
            if req.action == "pause":
                self.requests.ack_all("resume", "superseded by pause")
                self.paused = True
            elif req.action == "resume":
                self.requests.ack_all("pause", "superseded by resume")
                self.paused = False
                if self.condition is not None and self.condition.get("kind") == gate.CONDITION:
                    self.reset_gate_streak(f"resume request {req.id}")
            elif req.action == "skip":
                if self.running is None:
                    self.requests.ack(req, "nothing to skip")
                    continue
                self.skip_requested = True
            elif req.action == "stop":
                self.request_stop(f"stop request {req.id}")
            self.requests.pending.append(req)

    # -------------------------------------------------------------------------------------- reconcile
    def reconcile(self) -> None:
        r = self.running
        if r is not None:
            code = r.proc.poll()
            if code is None:
                self.steer(r)
                return
            self._reap(r, code)
        # No trainer runs from here on.
        self.requests.ack_all("pause", "paused")
        self.requests.ack_all("resume", "resumed")
        self.requests.ack_all("skip", "nothing to skip")
        self.skip_requested = False
        if self._wind_down() or self._held():
            return
        try:
            retention.maybe_run_daily(self.home, self.cfg)  # between jobs, when config.json asks for it
        except Exception as e:  # noqa: BLE001 - housekeeping never stops training
            log.error("daily clean failed: %s", e)
        self._start_next_job()

    def _reap(self, r: TrainerProcess, code: int) -> None:
        """The trainer has exited: take its exit code and carry out what it means for its job."""
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

    def _wind_down(self) -> bool:
        """A stop or a reached ``--max-jobs`` finishes the daemon (after the evaluation due); True: no job starts."""
        if self.stopping:
            self.requests.ack_all("stop", "stopped")
            if self.stop_file_seen or is_emergency_stop(self.home):
                clear_emergency_stop(self.home)
            if self.exit_code == ec.CONFIG_ERROR:
                self.finish("error", (self.last_error or {}).get("message"))
            else:
                self.finish("stopped", self.stop_reason)
            return True
        if self.max_jobs is not None and self.jobs_ended >= self.max_jobs:
            if self.evaluator.maybe_start(self.cfg):
                return True  # the evaluation the last job made due runs first, as with --once
            self.finish("stopped", f"--max-jobs {self.max_jobs} reached")
            return True
        return False

    def _held(self) -> bool:
        """Paused, a condition of the home, or an evaluation of the live adapter: True while no job may start."""
        if self.paused or self.disk_full is not None:
            return True
        self.update_condition()
        if self.condition is None or self.condition.get("kind") in home_guard.KINDS:
            self.condition = home_guard.check(self.home, self.cfg.min_free_disk_gb, self.condition, self._error)
        if self.condition is not None:
            if self.once:  # nothing will change while we wait: say why and leave (never retried in a loop)
                self.exit_code = ec.CONFIG_ERROR
                self.finish("error", self.condition["message"])
            return True
        return self.evaluator.maybe_start(self.cfg)  # the live adapter is being evaluated: the next job waits for it

    def _start_next_job(self) -> None:
        """Start the trainer of the next job; a job that needs no training (or cannot have it) ends here instead."""
        while not self.finished:
            job = job_start.next_job(self.queue, self.resume_first)
            if job is None:
                counts = self.queue.counts()
                if self.once and not self.intake.has_candidates() and not sum(counts["pending"].values()):
                    self.finish("stopped", "queue empty (--once)")
                return
            broken = job.meta.get("broken")
            if broken:
                job_start.fail_broken(self.home, self.queue, job, broken, self._error)
                self.jobs_ended += 1
                continue
            if job_start.complete_if_duplicate(self.home, self.queue, self.cfg, job):
                self.jobs_ended += 1
                if self.max_jobs is not None and self.jobs_ended >= self.max_jobs:
                    self.finish("stopped", f"--max-jobs {self.max_jobs} reached")
                continue
            try:
                self.start_trainer(job)
            except OSError:
                job_start.put_back(self.queue, job, self.resume_first)
                raise
            except Exception as e:  # noqa: BLE001 - about this job (e.g. its name): an attempt, never a loop
                if job_start.start_failed(self.home, self.queue, self.cfg, job, e, self._error):
                    self.jobs_ended += 1
                continue
            except BaseException:
                job_start.put_back(self.queue, job, self.resume_first)
                raise
            return

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
            r.walk_stop_ladder(now, self.cfg.stop_grace_s)
        progress = read_progress(self.home, r.job.id)
        trainer_state = (progress or {}).get("status")
        if trainer_state == "paused":
            self.requests.ack_all("pause", "paused")
        elif progress is not None and not self.paused:
            self.requests.ack_all("resume", "resumed")

    # -------------------------------------------------------------------------------------- trainer exit
    def on_trainer_exit(self, r: TrainerProcess, code: int) -> None:
        """Gather the facts of a trainer's exit, decide what it means (``outcome.decide``) and carry it out."""
        job = r.job
        seconds = round(time.monotonic() - r.started_mono, 3)
        result = read_result(result_path(job.dir))
        summary = summary_of(result)
        log.info("job %s: trainer exited %s (%d) after %.1fs", job.id, ec.name_of(code), code, seconds)
        skip_wanted = self.skip_requested
        self.skip_requested = False
        if summary.get("notice"):
            log.warning("job %s: %s", job.id, summary["notice"])
        facts = trainer_exit.exit_facts(self.home, self.cfg, r, code, result, summary, skip_wanted=skip_wanted,
                                        stopping=self.stopping)
        self.apply_outcome(job, decide(facts), result=result, summary=summary, seconds=seconds)

    def apply_outcome(self, job: Job, o: Outcome, *, result: dict, summary: dict, seconds: float) -> None:
        """Carry out the decision on a trainer's exit: the transition first, then its follow-ups."""
        gate_decision = summary.get("gate") if isinstance(summary.get("gate"), dict) else None
        if trainer_exit.move_job(self.home, self.queue, self.cfg, job, o, result=result, summary=summary,
                                 seconds=seconds):
            self.jobs_ended += 1
        if o.snapshot_and_evaluate:
            self.evaluator.job_done(job.id, self.cfg, gate_decision)
        if o.state == "done":
            self.end_streak_on_a_new_level()
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
            self.requests.ack_all(action, ack)
        if o.error:
            self._error(o.error, job.id)
        if o.stop_for_config:
            self.exit_code = ec.CONFIG_ERROR
            self.request_stop("configuration error")
        if o.disk_full:
            raise OSError(errno.ENOSPC, o.disk_full)

    def _error(self, message: str, job_id: str | None) -> None:
        self.last_error = {"message": message, "job_id": job_id, "at": now_iso()}
        log.error("%s", message)

    # -------------------------------------------------------------------------------------- status
    def write_status(self, *, final: bool = False) -> dict:
        return self.writer.write(status_doc(self, final=final), durable=final)


# ------------------------------------------------------------------------------------------------ CLI
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
