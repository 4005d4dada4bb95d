"""Held-out evaluation, the daemon's side (stdlib only): start it after a job, reap it, show it.

When ``evaluation.after_each_job`` is on, a job that ends ``done`` asks for an evaluation of the live adapter;
the daemon starts ``python -m trainingd.train.evaluate --home H`` (torch lives there, never in the daemon) in its
own session, output in ``logs/eval_output.log``, and starts no new job until it has ended, so the two never
share the CPU and each evaluation sees exactly the adapter of the jobs before it. The daemon loop keeps
ticking meanwhile (control requests, status). The evaluator writes ``status/eval_result.json`` and appends a
``{"kind": "eval", ...}`` line to ``status/history.jsonl``; ``status()`` is the ``eval`` block of the status file.

``trainingd eval`` runs the same evaluation in the foreground (``run_eval_command``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import read_json
from trainingd.config import Config
from trainingd.contracts.job import now_iso
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.evaluation")

HISTORY_KIND = "eval"


def result_path(home: Home) -> Path:
    """The latest evaluation (what the status file's ``eval.last`` shows)."""
    return home.status_dir / "eval_result.json"


# The generator's vocabulary the cached sets were made from: a set cached from the old 152-word list (no tag) may
# hold words the new list trains on, so it is not reused.
EVAL_SET_VOCABULARY = "wordfreq8k"


def eval_set_cache(home: Home, seed: int, level: int, count: int) -> Path:
    """The held-out set fetched from the generator, kept so every evaluation of this home uses the same one."""
    return home.status_dir / f"eval_set_level{level}_seed{seed}_count{count}_{EVAL_SET_VOCABULARY}.jsonl"


def log_path(home: Home) -> Path:
    return home.logs / "eval_output.log"


def read_last(home: Home) -> dict | None:
    try:
        doc = read_json(result_path(home), None)
    except (ValueError, OSError):
        return None
    return doc if isinstance(doc, dict) else None


def eval_entries(history: list[dict]) -> list[dict]:
    """The evaluation lines of ``status/history.jsonl`` (the others are finished jobs)."""
    return [e for e in history if isinstance(e, dict) and e.get("kind") == HISTORY_KIND]


class Evaluator:
    """One evaluation subprocess at a time, started between jobs."""

    def __init__(self, home: Home):
        self.home = home
        self.proc: subprocess.Popen | None = None
        self.wanted: str | None = None  # the job after which an evaluation is due
        self.job_id: str | None = None
        self.started_at: str | None = None
        self.last_error: str | None = None

    def job_done(self, job_id: str, cfg: Config) -> None:
        if cfg.evaluation.after_each_job:
            self.wanted = job_id

    def maybe_start(self, cfg: Config) -> bool:
        """True while an evaluation runs (started now or before): no job may start."""
        if self.proc is not None:
            return True
        if self.wanted is None or not cfg.evaluation.after_each_job:
            return False
        job_id, self.wanted = self.wanted, None
        cmd = [sys.executable, "-m", "trainingd.train.evaluate", "--home", str(self.home.root), "--trigger",
               "after_job", "--job-id", job_id, "--parent-pid", str(os.getpid())]
        self.home.logs.mkdir(parents=True, exist_ok=True)
        with open(log_path(self.home), "ab") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.home.root, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.job_id, self.started_at = job_id, now_iso()
        log.info("evaluating the adapter after job %s (pid %d)", job_id, self.proc.pid)
        return True

    def poll(self) -> None:
        if self.proc is None:
            return
        code = self.proc.poll()
        if code is None:
            return
        self.proc = None
        if code == 0:
            self.last_error = None
            last = read_last(self.home) or {}
            log.info("evaluation after job %s: exact match %s, token accuracy %s (%s s)", self.job_id,
                     last.get("exact_match"), last.get("token_accuracy"), last.get("seconds"))
        else:
            self.last_error = (f"evaluation after job {self.job_id} exited {code}; see "
                               f"{log_path(self.home).relative_to(self.home.root)}")
            log.error("%s", self.last_error)

    def stop(self) -> None:
        """The daemon is exiting: end a running evaluation (it holds nothing that must be saved)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def status(self) -> dict[str, Any]:
        return {"state": "running" if self.proc is not None else "idle", "job_id": self.job_id,
                "started_at": self.started_at if self.proc is not None else None, "last": read_last(self.home),
                "last_error": self.last_error}


def run_eval_command(home: Home, *, as_json: bool) -> int:
    """``trainingd eval``: evaluate the live adapter now and print the result."""
    from trainingd import exit_codes as ec
    from trainingd.config import ConfigError

    try:
        from trainingd.train.evaluate import evaluate_home
    except ImportError as e:  # torch missing: the trainer's packages are not installed
        print(f"trainingd eval needs the trainer's packages: {e}", file=sys.stderr)
        return ec.ERROR
    logging.getLogger().setLevel(logging.INFO)
    try:
        result = evaluate_home(home, trigger="cli")
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"trainingd eval: {e}", file=sys.stderr)
        return ec.CONFIG_ERROR
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"exact match {result['correct']}/{result['total']} = {result['exact_match']:.3f}, "
              f"token accuracy {result['token_accuracy']:.3f}, {result['seconds']:.1f}s "
              f"(adapter: {result['adapter'] or 'none, the base alone'}; eval set: {result['eval_set']['source']})")
    return ec.OK
