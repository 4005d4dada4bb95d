"""Atomic file operations, stdlib only.

Everything another process reads is written here: a temporary file in the same folder, flushed and
fsynced, ``os.replace``d over the target, then the folder fsynced so the rename itself survives a power
cut. Moves between queue states are one ``rename`` on one filesystem, with both folders fsynced.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from trainingd.faults import fault_point


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, durable: bool = True, point: str | None = None) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new content, never a mix.

    ``durable=False`` skips the fsyncs: for views rewritten every second (a lost update is harmless).
    ``point`` names the fault point (``trainingd.faults``) between the write and its fsync.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if point:
                fault_point(point)  # a crash leaves the temp file; ENOSPC/EIO fail like the write/fsync
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_create_text(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` atomically unless it exists (then False; never overwrites, no race)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)  # unlike rename, link refuses an existing target
            break
        except FileExistsError:
            return False
        except FileNotFoundError:
            if attempt == 2:  # a starting daemon swept our temp file as a leftover: write it again
                raise
        finally:
            Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True


def atomic_write_text(path: Path, text: str, *, durable: bool = True, point: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable, point=point)


def atomic_write_json(path: Path, obj: Any, *, durable: bool = True, point: str | None = None) -> None:
    """Write ``obj`` as indented JSON atomically. NaN/Infinity are refused: readers expect strict JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False, sort_keys=False) + "\n", durable=durable,
                      point=point)


def json_safe(obj: Any) -> Any:
    """A strict-JSON copy of ``obj``: NaN and infinities become None, other non-JSON values their ``str``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return str(obj)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file written by ``atomic_write_json``; ``default`` when it does not exist."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def append_jsonl(path: Path, obj: Any) -> None:
    """Append one JSON line (append-only logs such as metrics.jsonl; a torn last line is skipped by readers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, allow_nan=False) + "\n")


def read_jsonl(path: Path) -> list[Any]:
    """Read an append-only JSONL log, skipping a torn (half-written) line."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return out


def durable_rename(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` with one rename (same filesystem) and fsync both folders.

    Refuses to overwrite: a job folder must never silently replace another.
    """
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        raise FileExistsError(f"refusing to overwrite {dst}")
    os.rename(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def claim_by_rename(src: Path, dst: Path) -> bool:
    """Try to take ``src`` by renaming it to ``dst``; False when another process got there first."""
    try:
        durable_rename(src, dst)
    except FileNotFoundError:
        return False
    return True
