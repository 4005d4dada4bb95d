"""Held-out evaluation, the daemon's side (stdlib only): start it after a job, reap it, show it.

When ``evaluation.after_each_job`` is on, a job that ends ``done`` asks for an evaluation of the live adapter;
the daemon starts ``python -m trainingd.train.evaluate --home H`` (torch lives there, never in the daemon) in its
own session, output in ``logs/eval_output.log``, and starts no new job until it has ended, so the two never
share the CPU and each evaluation sees exactly the adapter of the jobs before it. The daemon loop keeps
ticking meanwhile (control requests, status). The evaluator writes ``status/eval_result.json`` and appends a
``{"kind": "eval", ...}`` line to ``status/history.jsonl``; ``status()`` is the ``eval`` block of the status file.

With the gate on, the trainer has already scored the published adapter on the same held-out set, on the model it
held (``summary.gate.candidate``): a promoted job's evaluation is recorded from those scores, ``"trigger":
"gate"``, with no second load; a rejected job changed nothing live, so it is not evaluated again.

``trainingd eval`` runs the same evaluation in the foreground (``trainingd.train.evaluate.run_eval_command``, in
its own process). The result file's schema is ``trainingd.contracts.eval_result``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import append_jsonl, atomic_write_json
from trainingd.config import Config
from trainingd.contracts.adapter_state import read_adapter_state, trained_count
from trainingd.contracts.eval_result import (  # noqa: F401 - eval_entries is read here by the daemon's callers
    HISTORY_KIND, eval_entries, read_last, result_path, trained_so_far, trained_start, trained_step)
from trainingd.daemon.history_fold import JsonlFold
from trainingd.contracts.job import now_iso
from trainingd.lifecycle.gate import REJECTED
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.evaluation")

def log_path(home: Home) -> Path:
    return home.eval_log


def record_gate_scores(home: Home, cfg: Config, job_id: str, decision: dict, so_far: dict | None = None) -> bool:
    """Record the evaluation of a promoted candidate from the gate's scores of it; False when they are missing.
    ``so_far``: ``trained_so_far`` of the home, when the caller keeps it (otherwise the history is read)."""
    cand, eval_set = decision.get("candidate"), decision.get("eval_set")
    if not isinstance(cand, dict) or not isinstance(eval_set, dict) or not cand.get("examples"):
        return False
    total = int(cand["examples"])
    state = read_adapter_state(home.current_model)
    result = {"kind": HISTORY_KIND, "trigger": "gate", "job_id": job_id, "finished_at": now_iso(),
              "exact_match": round(float(cand["exact_match"]), 4),
              "token_accuracy": round(float(cand["token_accuracy"]), 4),
              "correct": round(float(cand["exact_match"]) * total), "total": total, "level": eval_set.get("level"),
              "seconds": float((decision.get("seconds") or {}).get("candidate") or 0.0), "load_seconds": 0.0,
              "base_model": cfg.base_model, "adapter": str(home.current_model),
              "adapter_jobs": trained_count(state), **(so_far or trained_so_far(home)), "eval_set": eval_set}
    atomic_write_json(result_path(home), result)
    append_jsonl(home.history, result)
    log.info("evaluation after job %s from the gate's scores: exact match %s, token accuracy %s", job_id,
             result["exact_match"], result["token_accuracy"])
    return True


class Evaluator:
    """One evaluation subprocess at a time, started between jobs."""

    def __init__(self, home: Home):
        self.home = home
        self.proc: subprocess.Popen | None = None
        self.wanted: str | None = None  # the job after which an evaluation is due
        self.job_id: str | None = None
        self.started_at: str | None = None
        self.last_error: str | None = None
        self._trained = JsonlFold(home.history, trained_start, trained_step)

    def _so_far(self) -> dict | None:
        try:
            return self._trained.update()
        except OSError:
            return None  # record_gate_scores reads the history itself (and says why it cannot)

    def job_done(self, job_id: str, cfg: Config, gate_decision: dict | None = None) -> None:
        if not cfg.evaluation.after_each_job:
            return
        if gate_decision and gate_decision.get("outcome") == REJECTED:
            return  # nothing was published: the live adapter's last evaluation still holds
        if gate_decision and record_gate_scores(self.home, cfg, job_id, gate_decision, self._so_far()):
            return
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
