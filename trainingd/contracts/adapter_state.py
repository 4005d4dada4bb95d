"""``current_model/adapter_state.json``: what the live adapter is and which jobs are in it. Stdlib only.

The trainer writes it last when it publishes an adapter (after the weights are durable; ``write_adapter_state``:
``atomic_ops.atomic_write_json``); the daemon reads
it to complete jobs published before a crash, to skip files already trained (dedupe), and to see whether
config.json still matches the adapter. Read and write it only through this module::

    {"base_model": "/abs/base", "base_model_hash": "sha256 of the base's config and weights",
     "locked": {"base_model": ..., "lora.r": 16, ...},   # what makes the adapter this adapter
     "model_name": "trainingd-adapter",
     "generation": 3,                                     # bumped by every publish (0: no adapter yet)
     "generation_id": "5f0c...",                           # new random id at every publish
     "trained": [{"job_id", "sha256", "file", "steps", "finished_at", "generation"}, ...],
     "updated_at": 1764470000.5,
     "base_content_sha256": "...",        # every byte of the base, added by the daemon (trainingd.lifecycle.home_guard)
     "approvals": [{"at", "who", "changes"}, ...],   # locked-key changes accepted (trainingd.lifecycle.approval)
     "restored_from": "<snapshot name>"}  # after a rollback, until the next publish (trainingd.lifecycle.snapshots)

The generation is part of a checkpoint's identity: a checkpoint records the ``generation_id`` of the
adapter its job started from, and resumes only onto that adapter (otherwise the job is retrained on the
current one), so a resume never overwrites what was published in between. Files written before
generations existed read as generation 0 with id ``None``.

    python3 -c "from trainingd.contracts.adapter_state import read_adapter_state; print(read_adapter_state('current_model'))"
"""  # noqa: E501 - the shell line above is copied whole

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import atomic_write_json, read_json

FILE = "adapter_state.json"


def read_adapter_state(folder: Path | str) -> dict | None:
    """The state of the adapter in ``folder``; None when there is none. Raises ValueError when unreadable."""
    data = read_json(Path(folder) / FILE, None)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{Path(folder) / FILE} is not a JSON object")
    return data


def adapter_state_stamp(folder: Path | str) -> tuple:
    """(mtime_ns, size, inode) of the state file, ``()`` when there is none: changes with every publish."""
    try:
        st = (Path(folder) / FILE).stat()
    except FileNotFoundError:
        return ()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def write_adapter_state(folder: Path | str, state: dict) -> None:
    """Replace the state file atomically and durably (the last step of a publish)."""
    atomic_write_json(Path(folder) / FILE, state)


def generation_id(state: dict | None) -> str | None:
    """The id of the adapter generation ``state`` describes (None: no adapter, or one from before generations)."""
    value = (state or {}).get("generation_id")
    return value if isinstance(value, str) else None


def trained_entries(state: dict | None) -> list[dict]:
    """The jobs durably in the adapter."""
    trained = (state or {}).get("trained")
    return [t for t in trained if isinstance(t, dict)] if isinstance(trained, list) else []


def next_state(previous: dict | None, *, entry: dict, base_model: str, base_model_hash: str, locked: dict,
               model_name: str) -> dict:
    """The state after publishing one more job on top of ``previous``: a new generation listing ``entry``."""
    generation = int((previous or {}).get("generation") or 0) + 1
    # Republishing after a crash must not list the job twice.
    trained = [t for t in trained_entries(previous)
               if (t.get("job_id"), t.get("sha256")) != (entry.get("job_id"), entry.get("sha256"))]
    trained.append({**entry, "generation": generation})
    state: dict[str, Any] = {"base_model": base_model, "base_model_hash": base_model_hash, "locked": locked,
                             "model_name": model_name, "generation": generation,
                             "generation_id": uuid.uuid4().hex, "trained": trained, "updated_at": time.time()}
    if (previous or {}).get("base_model_hash") == base_model_hash:
        # Recorded by the daemon and by approvals (trainingd.lifecycle.home_guard, trainingd.lifecycle.approval):
        # kept while the base is.
        for key in ("base_content_sha256", "approvals"):
            if (previous or {}).get(key):
                state[key] = previous[key]
    return state
