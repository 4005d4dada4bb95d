"""The "stream" learning-rate policy: one warm-up per adapter, a constant rate across files, AdamW carried.

With ``lr_schedule: "stream"`` a job neither starts a fresh AdamW nor warms up again: it loads the optimizer
state the job before it left beside the live adapter, in ``<adapter>/optimizer/``:

    optimizer/optimizer.pt   the finished job's final optimizer state, as a checkpoint resume reads it
    optimizer/stream.json    {"generation_id", "optimizer_steps", "strategy", "world_size"}, written last

It counts only when ``stream.json`` names the generation_id of the adapter the job starts from
(``adapter_state.json``): a state left by a publish that crashed before ``adapter_state.json``, an adapter put
back from a snapshot (snapshots copy top-level files only) or a consolidated base has none that matches, and
the job starts a fresh AdamW that warms up again. Publishing writes the folder after the adapter's weights and
before ``adapter_state.json`` (the commit point), each file atomically and fsynced.

The rate at optimizer step ``s`` of a job is ``learning_rate * min(1, (n + s + 1) / (w + 1))``: ``n`` is the
carried state's steps (0 when fresh) and ``w`` is ``stream_warmup_steps``. ``n`` is read from the adapter the
job starts from, which a resumed job shares with its first try (invariant 8), so exact resume holds: the
checkpoint holds the optimizer and the scheduler as in the per-file policy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from trainingd.atomic_ops import atomic_write_json, fsync_dir
from trainingd.contracts.adapter_state import generation_id

log = logging.getLogger("trainingd.train.stream")

DIRNAME = "optimizer"
OPTIMIZER = "optimizer.pt"
STATE = "stream.json"


def carried_dir(adapter_dir: Path | str) -> Path:
    return Path(adapter_dir) / DIRNAME


def lr_lambda(warmup_steps: int, carried_steps: int) -> Callable[[int], float]:
    """The stream policy's factor of ``learning_rate`` at a job's optimizer step ``step`` (0-based)."""

    def f(step: int) -> float:
        done = carried_steps + step
        return 1.0 if done >= warmup_steps else (done + 1) / (warmup_steps + 1)

    return f


def read_carried(adapter_dir: Path | str | None, adapter_state: dict | None) -> dict | None:
    """The carried state's description when it belongs to this adapter generation (None: start fresh), and why."""
    if adapter_dir is None:
        return None
    folder = carried_dir(adapter_dir)
    try:
        doc = json.loads((folder / STATE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("stream: ignoring unreadable %s (%s): a fresh optimizer", folder / STATE, e)
        return None
    gid = generation_id(adapter_state)
    if not isinstance(doc, dict) or gid is None or doc.get("generation_id") != gid:
        log.info("stream: %s belongs to adapter generation %s, not %s: a fresh optimizer",
                 folder, (doc or {}).get("generation_id") if isinstance(doc, dict) else None, gid)
        return None
    if not (folder / OPTIMIZER).is_file() or not isinstance(doc.get("optimizer_steps"), int):
        return None
    return {**doc, "path": str(folder / OPTIMIZER)}


def write_carried(adapter_dir: Path | str, optimizer_pt: Path | str, *, generation_id: str, optimizer_steps: int,
                  strategy: str, world_size: int) -> None:
    """Put the finished job's optimizer state beside the adapter being published (before its adapter_state.json)."""
    folder = carried_dir(adapter_dir)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{OPTIMIZER}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(optimizer_pt, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, folder / OPTIMIZER)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(folder)
    atomic_write_json(folder / STATE, {"generation_id": generation_id, "optimizer_steps": optimizer_steps,
                                       "strategy": strategy, "world_size": world_size})


def remove_carried(adapter_dir: Path | str) -> None:
    """The per-file policy keeps no optimizer beside the adapter (a stale one would only take disk)."""
    folder = carried_dir(adapter_dir)
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def reset_groups(optimizer, learning_rate: float, weight_decay: float) -> None:
    """After loading a carried state: this job's rate and decay (config.json may have changed them), and no
    ``initial_lr`` left over, so the new scheduler starts from ``learning_rate``."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
        group["weight_decay"] = weight_decay
        group.pop("initial_lr", None)
