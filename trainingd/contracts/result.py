"""``<job folder>/result.json``: how a trainer run ended. Stdlib only.

Written once, at the end of a run, by the trainer (``trainingd.train.recipe.execute``, or
``trainingd.train.__main__`` when it fails before the recipe starts) with ``write_result``
(``atomic_ops.atomic_write_json``); its path is the trainer's ``--reason-file``. Removed by the daemon before
it starts a trainer (``clear_result``), so an earlier attempt's result is never read. Read by the daemon when
the trainer exits (``read_result``) to complete or fail the job; a standalone ``train.py`` run writes it to
``<output-dir>/result.json`` and prints it::

    {"exit": "ok",                 # the exit code's name (trainingd.exit_codes.name_of): ok, data_error, ...
     "summary": {...},             # ok: steps, loss, eval_loss, tokens, seconds, data{...}, notice, ...
                                   #   gate (gate.enabled): {"outcome": "promoted"|"rejected", "reason", "metric",
                                   #   "champion", "candidate", "paired", "snapshot", "seconds", ...}
     "reason": "...",              # otherwise: a sentence a person can act on
     "details": ["..."]}           # otherwise: one line per problem (e.g. bad lines of the data file)

A failed run may carry a ``summary`` too (what it did before it stopped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from trainingd import exit_codes
from trainingd.atomic_ops import atomic_write_json, json_safe, read_json

FILE = "result.json"


class ResultDoc(TypedDict, total=False):
    exit: str
    summary: dict
    reason: str
    details: list


@dataclass
class RunResult:
    """What a trainer run returns; ``to_json`` is the file's content."""

    exit_code: int
    reason: str = ""
    details: list = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def to_json(self) -> ResultDoc:
        out: dict[str, Any] = {"exit": exit_codes.name_of(self.exit_code)}
        if self.exit_code == exit_codes.OK:
            out["summary"] = self.summary
        else:
            out["reason"] = self.reason
            out["details"] = self.details
            if self.summary:
                out["summary"] = self.summary
        return out  # type: ignore[return-value]


def result_path(job_dir: Path | str) -> Path:
    return Path(job_dir) / FILE


def write_result(path: Path | str, result: RunResult) -> None:
    atomic_write_json(Path(path), json_safe(result.to_json()))


def read_result(path: Path | str) -> ResultDoc:
    """The result; ``{}`` when the trainer wrote none (killed) or it cannot be read."""
    try:
        data = read_json(Path(path), {}) or {}
    except (ValueError, OSError):
        return {}
    return data if isinstance(data, dict) else {}  # type: ignore[return-value]


def summary_of(result: ResultDoc | dict) -> dict:
    """The result's summary (``{}`` when it has none)."""
    summary = result.get("summary")
    return summary if isinstance(summary, dict) else {}


def clear_result(job_dir: Path | str) -> None:
    result_path(job_dir).unlink(missing_ok=True)
