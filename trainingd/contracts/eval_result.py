"""``status/eval_result.json``, the held-out set's cache beside it, and the ``{"kind": "eval"}`` history lines.

Written by the evaluator (``python -m trainingd.train.evaluate``, started by the daemon after a job or by
``trainingd eval``), or after a gated job by the daemon from the trainer's scores of the published candidate
(``"trigger": "gate"``, ``trainingd.daemon.evaluation.record_gate_scores``), with
``atomic_ops.atomic_write_json``; read by the daemon (the status file's ``eval.last``), the monitor and the CLIs::

    {"kind": "eval", "trigger": "after_job"|"cli"|"gate", "job_id", "finished_at", "exact_match", "token_accuracy",
     "correct", "total", "seconds", "load_seconds", "base_model", "adapter", "adapter_jobs",
     "trained_jobs", "trained_examples", "trained_tokens", "eval_set": {...}, "samples": [...]}

The same document without ``samples`` is appended to ``status/history.jsonl``. The held-out set fetched from the
generator is kept as ``status/eval_set_level<L>_seed<S>_count<N>.jsonl`` so every evaluation of a home uses the
same one. Stdlib only.
"""

from __future__ import annotations

from pathlib import Path

from trainingd.atomic_ops import read_json, read_jsonl
from trainingd.paths import Home

HISTORY_KIND = "eval"


def result_path(home: Home) -> Path:
    """The latest evaluation (what the status file's ``eval.last`` shows)."""
    return home.eval_result


def eval_set_cache(home: Home, seed: int, level: int, count: int) -> Path:
    """The held-out set fetched from the generator, kept so every evaluation of this home uses the same one."""
    return home.eval_set_cache(seed, level, count)


def read_last(home: Home) -> dict | None:
    try:
        doc = read_json(result_path(home), None)
    except (ValueError, OSError):
        return None
    return doc if isinstance(doc, dict) else None


def eval_entries(history: list[dict]) -> list[dict]:
    """The evaluation lines of ``status/history.jsonl`` (the others are finished jobs)."""
    return [e for e in history if isinstance(e, dict) and e.get("kind") == HISTORY_KIND]


def trained_so_far(home: Home) -> dict:
    """Jobs and examples trained into the adapter so far, from ``status/history.jsonl``."""
    acc = trained_start()
    for e in read_jsonl(home.history):
        if isinstance(e, dict):
            acc = trained_step(acc, e)
    return acc


def trained_start() -> dict:
    return {"trained_jobs": 0, "trained_examples": 0, "trained_tokens": 0}


def trained_step(acc: dict, e: dict) -> dict:
    """``trained_so_far`` one history line at a time (the daemon folds only the new lines: ``JsonlFold``)."""
    if e.get("state") == "done" and e.get("result") == "ok":
        acc = {"trained_jobs": acc["trained_jobs"] + 1,
               "trained_examples": acc["trained_examples"] + int(e.get("kept") or e.get("examples") or 0),
               "trained_tokens": acc["trained_tokens"] + int(e.get("tokens") or 0)}
    return acc
