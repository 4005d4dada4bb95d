"""Atomic file operations, stdlib only.

Everything another process reads is written here: a temporary file in the same folder, flushed and
fsynced, ``os.replace``d over the target, then the folder fsynced so the rename itself survives a power
cut. Moves between queue states are one ``rename`` on one filesystem, with both folders fsynced.

Folders follow the same rule, at one durability level (the strongest) wherever they are written:

- ``publish_folder``: a finished temporary sibling (every file and folder in it fsynced) renamed into place,
  then the parent fsynced: checkpoints, snapshots, consolidated bases, embedded models, the data cache.
- ``retire_folder``: renamed out of sight (``.retired-*``) first, then removed, so a kill never leaves a
  half-deleted folder under its name.
- ``durable_copy``: a file copied through a temporary file, fsynced and renamed over the target.
- ``link_to_free_name``: a finished file given ``<stem><suffix>`` or ``<stem>-N<suffix>`` (a hard link never
  replaces a file; where the filesystem has none, a rename after checking the name is free).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
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


def appended_lines(path: Path, offset: int, chunk: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of each complete line of an append-only file from byte ``offset`` on, without its newline;
    a last line with no newline yet (being written) is left for the next read."""
    with open(path, "rb") as f:
        f.seek(offset)
        pending = b""
        while block := f.read(chunk):
            lines = (pending + block).split(b"\n")
            pending = lines.pop()
            for line in lines:
                yield offset, line
                offset += len(line) + 1


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


RETIRED_PREFIX = ".retired-"


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_tree(folder: Path) -> None:
    """Make every file and folder below ``folder`` (and ``folder`` itself) durable, deepest first."""
    folder = Path(folder)
    dirs = []
    for root, _subdirs, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                fsync_file(p)
        dirs.append(Path(root))
    for d in reversed(dirs):
        fsync_dir(d)


def publish_folder(tmp: Path, final: Path, *, point: str | None = None, replace: bool = False,
                   mode: int | None = 0o755) -> Path:
    """Make the finished temporary folder ``tmp`` (a sibling of ``final``) appear as ``final`` in one rename.

    Everything in ``tmp`` is fsynced first and the parent after the rename, so ``final`` is either absent or
    whole after a power cut. ``point`` names the fault point between the fsyncs and the rename. ``mode``
    (``mkdtemp`` makes folders private) is given to ``tmp`` first. An existing ``final`` is an error (the
    rename's own) unless ``replace``: then it is moved aside to ``.old-<name>-*`` and removed only after the
    new one is in place. The caller removes ``tmp`` when this raises.
    """
    tmp, final = Path(tmp), Path(final)
    if mode is not None:
        os.chmod(tmp, mode)
    fsync_tree(tmp)
    if point:
        fault_point(point)
    old = None
    if replace and final.exists():
        old = final.parent / f".old-{final.name}-{time.time_ns()}"
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def retire_folder(folder: Path, *, point: str | None = None) -> None:
    """Remove ``folder`` marker-first: renamed to ``.retired-<name>-*`` (fsynced), then deleted.

    A kill during the removal leaves a ``.retired-*`` folder that no reader counts and the next sweep removes;
    never a folder under its own name with half its files gone. A missing folder is no error.
    """
    folder = Path(folder)
    gone = folder.parent / f"{RETIRED_PREFIX}{folder.name}-{time.time_ns()}"
    try:
        os.rename(folder, gone)
    except FileNotFoundError:
        return
    fsync_dir(folder.parent)
    if point:
        fault_point(point)
    shutil.rmtree(gone, ignore_errors=True)


def durable_copy(src: Path, dst: Path, *, mode: int | None = 0o644, point: str | None = None) -> None:
    """Copy ``src`` over ``dst`` atomically: a temporary file beside ``dst``, fsynced, renamed (not the folder).

    ``mode`` replaces ``mkstemp``'s private 0600 (others read these files); ``point`` is the fault point before
    the rename. Callers fsync ``dst``'s folder once after their last copy (``fsync_dir``).
    """
    dst = Path(dst)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        if point:
            fault_point(point)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_to_free_name(tmp: Path, folder: Path, stem: str, suffix: str = ".jsonl") -> Path:
    """Give the finished file ``tmp`` the name ``<stem><suffix>`` in ``folder``, or ``<stem>-N<suffix>`` when taken.

    A hard link never replaces a file, so two writers cannot take one name; on a filesystem without hard links
    the fallback renames after checking the name is free. Durable once this returns (the folder is fsynced).
    ``tmp`` stays where it was after a link (the caller removes it). Raises FileExistsError when 999 are taken.
    """
    tmp, folder = Path(tmp), Path(folder)
    while len(os.fsencode(stem)) > 200:  # room for "-N<suffix>" within the 255-byte name limit
        stem = stem[:-1]
    for n in range(1, 1000):
        target = folder / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (some network and FUSE filesystems): rename into a free name
            if target.exists():
                continue
            os.rename(tmp, target)
        fsync_dir(folder)
        return target
    raise FileExistsError(f"{stem}{suffix} and 998 numbered variants already exist in {folder}")
