"""Checkpoints that describe themselves, and atomic publishing of the adapter.

A checkpoint is a folder ``<checkpoint_dir>/step-000NNN/`` holding the job's full adapter
(``adapter_config.json`` + ``adapter_model.safetensors``), ``optimizer.pt``, ``scheduler.pt``,
``rng.pt``, ``state.json`` (data position and metrics) and ``manifest.json`` (job id, data sha256,
base model path and hash, locked and full config, library versions, step; its schema is
``trainingd.contracts.manifest``). It is written into a
temporary ``.tmp-step-000NNN-*`` folder, renamed into place, and only then marked with ``COMPLETE``
(fsynced): a folder without the marker never counts. Old checkpoints are deleted only after a new
one is complete, so a save never destroys the last good one.

Inspect one from the shell::

    python3 -c "from trainingd.contracts.manifest import read_manifest; print(read_manifest('DIR/step-000004'))"
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from trainingd.atomic_ops import fsync_dir
from trainingd.config import locked_changes
from trainingd.contracts.adapter_state import write_adapter_state
from trainingd.contracts.manifest import write_manifest
from trainingd.faults import fault_point

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
STATE = "state.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
RETIRED = ".retired-"
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


def versions() -> dict[str, str]:
    """Library versions recorded in each manifest (for a person reading it, not checked)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    # the installed versions, read without importing: importing bitsandbytes in a run without QLoRA would load
    # it for nothing (and, on some CPUs, make it log about a kernel hub)
    for mod in ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets"):
        try:
            out[mod] = version(mod)
        except PackageNotFoundError:  # an optional library missing must not break a save
            out[mod] = "missing"
    from trainingd import __version__

    out["trainingd"] = __version__
    return out


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


def check_manifest(manifest: dict, expected: dict) -> None:
    """Raise CheckpointMismatch naming every field of ``expected`` that the manifest records differently.

    ``expected`` holds ``job_id``, ``data_sha256``, ``base_model``, ``base_model_hash`` and ``locked``.
    """
    problems = []
    for key in ("job_id", "data_sha256", "base_model", "base_model_hash"):
        if key in expected and manifest.get(key) != expected[key]:
            problems.append(f"{key} differs (recorded: {manifest.get(key)!r}, now: {expected[key]!r})")
    for change in locked_changes(manifest.get("locked"), expected.get("locked")):
        problems.append(f"locked config key {change['key']!r} differs (recorded: {json.dumps(change['adapter'])}, "
                        f"now: {json.dumps(change['config'])})")
    if problems:
        raise CheckpointMismatch("; ".join(problems))


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
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        fault_point("checkpoint_save")
        if final.exists():
            # Same step saved twice (a stop right after a periodic save): keep the old one until the
            # new one is in place.
            old = checkpoint_dir / f".old-{name}-{time.time_ns()}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        fsync_dir(checkpoint_dir)
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
    folder = Path(folder)
    gone = folder.parent / f"{RETIRED}{folder.name}-{time.time_ns()}"
    try:
        os.rename(folder, gone)
    except FileNotFoundError:
        return
    fsync_dir(folder.parent)
    fault_point("checkpoint_retire")
    shutil.rmtree(gone, ignore_errors=True)


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


def publish_adapter(src: Path, dest: Path, adapter_state: dict, before_state=None) -> None:
    """Publish the adapter in ``src`` into ``dest`` atomically, ``adapter_state.json`` last.

    Each adapter file is copied to a temp file inside ``dest``, fsynced and ``os.replace``d; the state
    file (which lists the trained jobs) is written only after both, so a job named in it is durably in
    the adapter. Publishing the same weights twice is harmless (idempotent).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, open(Path(src) / name, "rb") as inp:
                shutil.copyfileobj(inp, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; the monitor and consolidation read these
            fault_point("publish_file")
            os.replace(tmp, dest / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    fsync_dir(dest)
    if before_state is not None:
        before_state()  # a crash point in tests: weights replaced, state not yet written
    write_adapter_state(dest, adapter_state)
