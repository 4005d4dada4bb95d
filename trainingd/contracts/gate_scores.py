"""``gate_scores.json``: one adapter's per-example gate scores, beside its weights. Stdlib only.

Written by the trainer (``trainingd.train.gate_eval``) into ``current_model/`` after it publishes a promoted
candidate (or after it scored the champion at the start of a job, when there was no valid file), and into a
rejected candidate's snapshot; read by the next job's trainer as the champion's scores (no re-evaluation) and
by ``trainingd promote``. Valid only for the adapter it names (``generation_id``, null for the base alone) and
for the same held-out set and probe (their sha256)::

    {"schema_version": 1, "generation_id": "5f0c..."|null, "base_model_hash": "...",
     "eval_set_sha256": "...", "probe_sha256": "...", "job_id": "...", "scored_at": "<iso>",
     "seconds": 1.2,
     "exact_match": [1, 0, ...],          # per held-out example, in the set's order
     "token_accuracy": [0.93, ...],       # per held-out example
     "forgetting": [0.01, ...],           # per probe prompt: mean KL(base || adapter), nats per token
     "best": {"generation_id", "job_id", "exact_match": [...], "token_accuracy": [...], "forgetting": [...]}}
                                          # optional: the best adapter published on this held-out set, when it is
                                          # not this one (``trainingd.lifecycle.gate.best_after_promotion``)
"""

from __future__ import annotations

from pathlib import Path

from trainingd.atomic_ops import atomic_write_json, read_json

FILE = "gate_scores.json"
SCHEMA_VERSION = 1


def write_gate_scores(folder: Path | str, doc: dict) -> None:
    atomic_write_json(Path(folder) / FILE, {"schema_version": SCHEMA_VERSION, **doc})


def read_gate_scores(folder: Path | str) -> dict | None:
    """The scores, or None when there are none or they cannot be read."""
    try:
        data = read_json(Path(folder) / FILE, None)
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) and data.get("schema_version") == SCHEMA_VERSION else None


def matches(doc: dict | None, *, generation_id: str | None, base_model_hash: str | None, eval_set_sha256: str,
            probe_sha256: str) -> bool:
    """True when ``doc`` scores this adapter on this held-out set and probe."""
    return bool(doc) and all(doc.get(k) == v for k, v in (
        ("generation_id", generation_id), ("base_model_hash", base_model_hash),
        ("eval_set_sha256", eval_set_sha256), ("probe_sha256", probe_sha256)))
