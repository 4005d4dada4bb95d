"""``cache/base_hash.json``: base model folders' content hashes, kept under a stat stamp of their files. Stdlib only.

Hashing every byte of a multi-GB base costs seconds, and the daemon checks the base before each job. So
``trainingd.lifecycle.home_guard.content_hash`` keeps each folder's hash here with the stamp it was computed under,
and hashes again only when the stamp differs. Read and written by the daemon (the base check before each job, and
``record_base_hash`` after it) and by ``trainingd config approve`` (the hash of a newly approved base). It is written
with ``atomic_ops.atomic_write_json`` without fsync: a lost or stale entry only costs one more full hash. One entry
per base folder, the others kept (a home can change bases)::

    {"/srv/home/models/tiny-qwen3": {                     # the resolved base folder
        "stamp": [["config.json", 712, 1764470000123456789, 131090],   # [relpath, size, mtime_ns, inode] per
                  ["model.safetensors", 2345678, 1764470000223456789, 131091]],  # file, sorted, no dot files
        "sha256": "9f86d0..."}}                           # home_guard's content hash of the folder

A missing file reads as ``{}``; an unreadable one raises ValueError or OSError.

    python3 -c "from trainingd.contracts.base_hash import read_cache; print(list(read_cache('cache')))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainingd.atomic_ops import atomic_write_json, read_json

FILE = "base_hash.json"


def cache_path(cache_dir: Path | str) -> Path:
    return Path(cache_dir) / FILE


def read_cache(cache_dir: Path | str) -> dict[str, Any]:
    """Every entry, by folder; ``{}`` when there is none. Raises ValueError or OSError when it cannot be read."""
    doc = read_json(cache_path(cache_dir), {}) or {}
    return doc if isinstance(doc, dict) else {}


def cached_hash(cache: dict[str, Any], folder: Path, stamp: list[list]) -> str | None:
    """The hash kept for ``folder`` when it was computed under this very stamp; None otherwise."""
    hit = cache.get(str(folder))
    if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    return None


def write_cache(cache_dir: Path | str, cache: dict[str, Any], folder: Path, stamp: list[list], sha256: str) -> None:
    """Keep ``folder``'s hash beside the other entries of ``cache`` (as read). Raises OSError."""
    atomic_write_json(cache_path(cache_dir), {**cache, str(folder): {"stamp": stamp, "sha256": sha256}},
                      durable=False)  # a lost cache only costs one more hash
