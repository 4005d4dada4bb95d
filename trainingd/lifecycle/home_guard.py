"""Conditions of the whole home checked before each job: a changed base model, too little free disk, and a disk
that ran full under the daemon or its trainer (checked again until a probe write fits). Stdlib only.

The base model is protected by a full content hash (sha256 over every file's path and bytes) recorded in
``current_model/adapter_state.json`` as ``base_content_sha256`` after each job (``record_base_hash``). Before a
job starts the daemon compares the base folder with it (``check``); a changed base holds the daemon with a clear
status, as a changed locked key does, instead of training the adapter on other weights. Hashing a multi-GB base
costs seconds, so the hash is cached in ``cache/base_hash.json`` (``trainingd.contracts.base_hash``) under a stat
stamp of the folder's files (path, size, mtime_ns, inode): it is recomputed only when one of them changes.

    python3 -c "from trainingd.lifecycle.home_guard import content_hash; print(content_hash('models/tiny-qwen3'))"
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from trainingd.contracts import base_hash
from trainingd.contracts.adapter_state import read_adapter_state, write_adapter_state
from trainingd.faults import fault_point
from trainingd.paths import Home

log = logging.getLogger(__name__)

KINDS = ("base_changed", "low_disk")
FIELD = "base_content_sha256"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # what makes the disk_full condition
ROOM_PROBE_BYTES = 1 << 20  # a full disk is over once this much can be written (and fsynced) in the home


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))


def stat_stamp(folder: Path) -> list[list]:
    """``[[relpath, size, mtime_ns, inode], ...]``: changes whenever a file is written, replaced, added or removed."""
    out = []
    for p in _files(folder):
        st = p.stat()
        out.append([str(p.relative_to(folder)), st.st_size, st.st_mtime_ns, st.st_ino])
    return out


def _full_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in _files(folder):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        with open(p, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def content_hash(folder: Path | str, cache_dir: Path | None = None) -> str:
    """The base folder's content hash; from ``cache_dir/base_hash.json`` when no file's stat changed."""
    folder = Path(folder).resolve()
    stamp = stat_stamp(folder)
    cache = base_hash.read_cache(cache_dir) if cache_dir is not None else {}
    hit = base_hash.cached_hash(cache, folder, stamp)
    if hit is not None:
        return hit
    digest = _full_hash(folder)
    if cache_dir is not None:
        try:
            base_hash.write_cache(cache_dir, cache, folder, stamp, digest)
        except OSError as e:
            log.warning("cannot write %s: %s", base_hash.cache_path(cache_dir), e)
    return digest


def record_base_hash(home: Home) -> str | None:
    """After a job: write the base's content hash into the live adapter's state (once per base)."""
    state = read_adapter_state(home.current_model)
    base = Path((state or {}).get("base_model") or "")
    if not state or not (base / "config.json").is_file():
        return None
    digest = content_hash(base, home.cache)
    if state.get(FIELD) != digest:
        if state.get(FIELD):
            # The trainer checked the base at the job's start (its own fingerprint); a change during the job is
            # recorded by the next check, not here.
            return state[FIELD]
        write_adapter_state(home.current_model, {**state, FIELD: digest})
    return digest


def base_condition(home: Home) -> dict[str, Any] | None:
    """The base folder the live adapter was trained on no longer has the recorded content."""
    try:
        state = read_adapter_state(home.current_model)
    except (ValueError, OSError):
        return None
    recorded = (state or {}).get(FIELD)
    base = Path((state or {}).get("base_model") or "")
    if not recorded or not base.is_dir():
        return None
    now = content_hash(base, home.cache)
    if now == recorded:
        return None
    return {"kind": "base_changed",
            "message": f"the base model in {base} changed since the live adapter was trained on it (content hash "
                       f"{recorded[:12]} recorded, {now[:12]} now): no job starts until this is resolved",
            "changes": [{"key": FIELD, "adapter": recorded, "config": now}],
            "ways_out": [f"restore the base model's files in {base} (the approved base is never modified)",
                         "or keep the adapter as a snapshot and start a fresh one on the new base: "
                         "trainingd adapter new (daemon paused or stopped)"]}


def disk_condition(home: Home, min_free_gb: float) -> dict[str, Any] | None:
    if not min_free_gb:
        return None
    free = shutil.disk_usage(home.root).free / 2**30
    if free >= min_free_gb:
        return None
    return {"kind": "low_disk",
            "message": f"only {free:.2f} GiB free on the disk of {home.root} (min_free_disk_gb is {min_free_gb:g}): "
                       "no job starts until there is room",
            "changes": [], "ways_out": ["free disk space: trainingd clean --dry-run shows what the retention policy "
                                        "removes; the daemon goes on by itself",
                                        "or lower min_free_disk_gb in config.json, then: kill -HUP <daemon pid>"]}


def disk_full_condition(home: Home, where: str, e: OSError) -> dict[str, Any]:
    """The home's disk ran full (ENOSPC or a quota) in ``where``: no job starts until there is room again."""
    return {"kind": "disk_full",
            "message": f"the disk of {home.root} is full ({where}: {e}): no job starts until there is room",
            "changes": [], "ways_out": [f"free disk space (df -h {home.root}): trainingd clean --dry-run shows what "
                                        "the retention policy removes; the daemon goes on by itself",
                                        "or move the home to a larger disk (daemon stopped)"]}


def has_room(home: Home) -> bool:
    """Whether ``ROOM_PROBE_BYTES`` can be written and fsynced in the home (the probe file is removed again).

    The probe is a new file of its own (``mkstemp``): whatever else sits in the home, a folder or a FIFO of the
    same name included, is never opened."""
    name = None
    try:
        fd, name = tempfile.mkstemp(prefix=home.room_probe.name + "-", suffix=".tmp", dir=home.room_probe.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * ROOM_PROBE_BYTES)
            fault_point("room_probe")
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        return False  # not even the probe fits (or no inode is free)
    finally:
        if name is not None:
            Path(name).unlink(missing_ok=True)


def check(home: Home, min_free_gb: float, current: dict | None, error: Callable[[str, None], None]) -> dict | None:
    """The daemon's check before claiming a job: returns the condition to hold on (or None), reporting changes."""
    cond = disk_condition(home, min_free_gb) or base_condition(home)
    if cond is not None and (current or {}).get("kind") != cond["kind"]:
        error(cond["message"], None)
    elif cond is None and current is not None:
        log.info("the condition of the home is resolved (%s); jobs start again", current.get("kind"))
    return cond
