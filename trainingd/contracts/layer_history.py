"""``status/layer_history.jsonl``: the last reports of ``layer_activity``, across jobs, bounded. Stdlib only.

``status/layer_activity.json`` holds only the latest report, so on a stream of short files nobody could see which
modules the adapter's life has moved most. The trainer (``trainingd.train.layer_stats``) also appends every report
here through ``LayerHistory.append``; when the file holds more than ``LIMIT * 5/4`` reports it is rewritten
atomically with the last ``LIMIT`` (a view: not fsynced; a torn last line is skipped by the reader). The monitor
reads it with ``read_layer_history`` and serves a summary under ``/api/layers`` (``history``). One line::

    {"job_id": "000012-more", "step": 40, "updated_at": 1765000000.0,
     "modules": {"model.layers.3.self_attn.q_proj": [update_norm, delta_norm, grad_norm], ...}}

(``null`` for a value that is unknown, never NaN.)

    python3 -c "from trainingd.contracts.layer_history import read_layer_history as r
    print(len(r('status/layer_history.jsonl')))"
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import append_jsonl, atomic_write_text, json_safe, read_jsonl

log = logging.getLogger(__name__)

FILE = "layer_history.jsonl"
LIMIT = 1000
VALUES = ("update_norm", "delta_norm", "grad_norm")


def compact(doc: dict) -> dict:
    """One history line from a ``layer_activity`` document."""
    modules = {r["name"]: [r.get(k) for k in VALUES] for r in doc.get("modules") or []
               if isinstance(r, dict) and isinstance(r.get("name"), str)}
    return json_safe({"job_id": doc.get("job_id"), "step": doc.get("step"), "updated_at": doc.get("updated_at"),
                      "modules": modules})


class LayerHistory:
    """The appender one trainer process uses; it counts the file's lines once, then keeps the count."""

    def __init__(self, path: Path, limit: int = LIMIT):
        self.path = Path(path)
        self.limit = max(1, limit)
        self._lines: int | None = None

    def append(self, doc: dict) -> None:
        """Append one report and trim the file when it passed its bound. Raises OSError or ValueError."""
        if self._lines is None:
            self._lines = len(read_jsonl(self.path))
        append_jsonl(self.path, compact(doc))
        self._lines += 1
        if self._lines > self.limit * 5 // 4:
            kept = read_jsonl(self.path)[-self.limit:]
            atomic_write_text(self.path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept), durable=False)
            self._lines = len(kept)


def read_layer_history(path: Path) -> list[dict[str, Any]]:
    """Every complete line, oldest first (an empty list when the file is missing)."""
    return [r for r in read_jsonl(Path(path)) if isinstance(r, dict) and isinstance(r.get("modules"), dict)]
