"""The checkpoint layout (stdlib only): folders that describe themselves, and atomic publishing of the adapter.

A checkpoint is a folder ``<checkpoint_dir>/step-000NNN/`` holding the job's full adapter
(``adapter_config.json`` + ``adapter_model.safetensors``), ``optimizer.pt``, ``scheduler.pt``,
``rng.pt``, ``state.json`` (data position and metrics) and ``manifest.json`` (job id, data sha256,
base model path and hash, locked and full config, library versions, step; its schema is
``trainingd.contracts.manifest``). It is written into a
temporary ``.tmp-step-000NNN-*`` folder, renamed into place, and only then marked with ``COMPLETE``
(fsynced): a folder without the marker never counts. Old checkpoints are deleted only after a new
one is complete, so a save never destroys the last good one.

The trainer writes checkpoints (``save_checkpoint``) and publishes the adapter (``publish_adapter``); the daemon,
the snapshots and the checks read this layout and retire checkpoints with the same functions, so it lives here and
not in ``trainingd.train`` (which imports torch).

Inspect one from the shell::

    python3 -c "from trainingd.contracts.manifest import read_manifest; print(read_manifest('DIR/step-000004'))"
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from trainingd.atomic_ops import RETIRED_PREFIX, durable_copy, fsync_dir, publish_folder, retire_folder
from trainingd.contracts.adapter_state import write_adapter_state
from trainingd.contracts.manifest import write_manifest

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
"""The completion marker, written last: a step folder without it never counts."""
STATE = "state.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
"""A PEFT adapter: in current_model/, each checkpoint, each snapshot."""
MICRO_BATCH_FILE = "micro_batch.json"
"""``<checkpoints>/micro_batch.json``: ``{"micro_batch_size": N}``, the size an out-of-memory retry settled on
(daemon: after an OOM exit; trainer: after it halves the size itself) -> the job's next trainer."""
RETIRED = RETIRED_PREFIX
_STEP_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointMismatch(Exception):
    """A checkpoint or adapter exists but was made with other data, base model or locked settings."""


class AdapterMismatch(Exception):
    """The adapter to continue was made with another base model or LoRA shape: a condition of the home."""


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def has_adapter(folder: Path) -> bool:
    """True when ``folder`` holds a PEFT adapter (config and weights)."""
    return all((Path(folder) / name).is_file() for name in ADAPTER_FILES)


def base_model_hash(base: Path) -> str:
    """A fingerprint of a base model folder: its config, weight index and weight file headers.

    Hashing every weight byte of a multi-GB model at each start would cost seconds; the config,
    the index and each safetensors header (names, shapes, offsets) plus the file sizes change
    whenever the model does in practice. Small weight files (< 64 MiB, e.g. the embedded tiny model,
    whose headers do not change with its seed) are hashed whole.
    """
    base = Path(base)
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json"):
        p = base / name
        if p.is_file():
            h.update(name.encode() + b"\0" + p.read_bytes())
    for p in sorted(base.glob("*.safetensors")):
        size = p.stat().st_size
        h.update(p.name.encode() + b"\0" + str(size).encode())
        with open(p, "rb") as f:
            if size < 64 * 2**20:
                h.update(f.read())
            else:
                n = int.from_bytes(f.read(8), "little")
                h.update(f.read(min(n, 100 * 2**20)))
    return h.hexdigest()


def list_complete(checkpoint_dir: Path) -> list[Path]:
    """Complete checkpoints of one job, oldest step first."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return []
    found = []
    for p in checkpoint_dir.iterdir():
        m = _STEP_RE.match(p.name)
        if m and p.is_dir() and (p / COMPLETE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_complete(checkpoint_dir: Path) -> Path | None:
    done = list_complete(checkpoint_dir)
    return done[-1] if done else None


def save_checkpoint(checkpoint_dir: Path, step: int, *, write_files, manifest: dict, keep: int) -> Path:
    """Write one checkpoint atomically and prune old ones.

    ``write_files(folder)`` writes the payload (adapter, optimizer, ...) into the temporary folder.
    Returns the final folder. An existing complete checkpoint of the same step is replaced only after
    the new one is fully written (then renamed over it in two steps, the old one kept until then).
    """
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    name = step_dir_name(step)
    final = checkpoint_dir / name
    tmp = Path(tempfile.mkdtemp(dir=checkpoint_dir, prefix=f".tmp-{name}-"))
    try:
        write_files(tmp)
        write_manifest(tmp, manifest, step=step)
        # Same step saved twice (a stop right after a periodic save): the old one is kept until the new one is
        # in place (``.old-step-*`` meanwhile, which prune sweeps).
        publish_folder(tmp, final, point="checkpoint_save", replace=True)
        marker = final / COMPLETE
        with open(marker, "w") as f:
            f.write(f"{step}\n")
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune(checkpoint_dir, keep)
    return final


def retire(folder: Path) -> None:
    """Delete a checkpoint folder (or a job's folder of them) marker-first: renamed out of sight, then removed.

    A kill during the removal leaves a ``.retired-*`` folder that no reader counts (never a folder still
    named ``step-*`` and marked COMPLETE with half its files gone); the next prune removes it.
    """
    retire_folder(folder, point="checkpoint_retire")


def _remove_retired(folder: Path) -> None:
    for p in folder.iterdir() if folder.is_dir() else ():
        if p.name.startswith(RETIRED) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def prune(checkpoint_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete checkpoints; remove older ones and leftover temp folders."""
    complete = list_complete(checkpoint_dir)
    for p in complete[:-keep] if keep > 0 else complete:
        retire(p)
    for p in Path(checkpoint_dir).iterdir():
        if p.name.startswith((".tmp-step-", ".old-step-", RETIRED)) and p.is_dir():
            # Leftovers of a crashed save (a running save of this job is the caller itself).
            shutil.rmtree(p, ignore_errors=True)
        elif _STEP_RE.match(p.name) and p.is_dir() and not (p / COMPLETE).exists():
            shutil.rmtree(p, ignore_errors=True)


def remove_checkpoints(checkpoint_dir: Path) -> None:
    """Delete all checkpoints of one job (after publishing, on skip, or when refused), marker-first."""
    checkpoint_dir = Path(checkpoint_dir)
    retire(checkpoint_dir)
    _remove_retired(checkpoint_dir.parent)  # what a kill left of earlier retirements


def publish_adapter(src: Path, dest: Path, adapter_state: dict, before_state=None,
                    segments_from: list[Path] | tuple = ()) -> None:
    """Publish the adapter in ``src`` into ``dest`` atomically, ``adapter_state.json`` last.

    Each adapter file is copied to a temp file inside ``dest``, fsynced and ``os.replace``d; the state
    file (which lists the trained jobs) is written only after both, so a job named in it is durably in
    the adapter. Publishing the same weights twice is harmless (idempotent).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:  # 0644: the monitor and consolidation read these
        durable_copy(Path(src) / name, dest / name, mode=0o644, point="publish_file")
    fsync_dir(dest)
    if before_state is not None:
        before_state()  # a crash point in tests: weights replaced, state not yet written
    # Sealed segments of the trained list come from the state's own folder: the snapshot restored or the
    # adapter the job started from (``trainingd.contracts.adapter_state``).
    write_adapter_state(dest, adapter_state, segments_from=[Path(src), *map(Path, segments_from)])
