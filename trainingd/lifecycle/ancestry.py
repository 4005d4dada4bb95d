"""What the live model is made of: the files trained into its adapter and into every consolidated base below it.

Invariant 11 (exactly-once across the model's life) reads this. Stdlib only (the daemon and the checkers call it)::

    from trainingd.lifecycle.ancestry import find_trained
    hit = find_trained(home, sha256, base_model=cfg.base_model)   # None, or {"job_id", "file", "where", ...}

The live model is ``base + current_model/``. Its ancestors are the live adapter (whose ``trained`` list already
holds every snapshot it grew from) and the chain of consolidated bases: ``consolidated_models/<stamp>/manifest.json``
lists the files merged into that base (``files_trained``) and its ``parent_base``, which may be consolidated too.
What that means for dedupe:

* after ``consolidate_model.py --yes`` the fresh adapter grows on a base that holds the merged files: they stay
  duplicates;
* after ``trainingd rollback SNAPSHOT`` the files trained after that snapshot are no longer in the model: they are
  accepted and trained again;
* after ``trainingd adapter new`` the archived adapter is no ancestor of the fresh one (it is a sibling on the same
  base): its files are accepted and trained again. ``--force`` always trains.

``ever_trained_ids`` is wider: every job recorded as trained anywhere in the home (live adapter, any snapshot, any
consolidated base), which is what a job in ``queue/done/`` must be.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import read_json
from trainingd.contracts.adapter_state import iter_trained, read_adapter_state
from trainingd.contracts.lineage_manifest import read_lineage_manifest
from trainingd.paths import Home

log = logging.getLogger(__name__)

MAX_DEPTH = 1000  # a chain of consolidations longer than this is a loop someone made by hand


def is_consolidated(manifest: dict | None) -> bool:
    return isinstance(manifest, dict) and isinstance(manifest.get("parent_base"), dict) \
        and isinstance(manifest.get("files_trained"), list)


def _live_state(home: Home) -> dict | None:
    try:
        return read_adapter_state(home.current_model)
    except (ValueError, OSError):
        return None


def _config_base(home: Home) -> str | None:
    try:
        data = read_json(home.config, {})
    except (ValueError, OSError):
        return None
    return data.get("base_model") if isinstance(data, dict) else None


def live_base_folder(home: Home, base_model: str | None = None) -> Path | None:
    """The folder of the live model's base: the live adapter's own base, else config's ``base_model``."""
    state = _live_state(home)
    name = (state or {}).get("base_model") or base_model or _config_base(home)
    if not isinstance(name, str) or not name.strip() or name.startswith("embedded:"):
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() else home.root / path


def base_chain(base: Path | None) -> list[dict[str, Any]]:
    """Each consolidated base from ``base`` down to the first plain one: ``{"name", "path", "files_trained"}``."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    while base is not None and len(out) < MAX_DEPTH:
        try:
            key = str(base.resolve())
        except OSError:
            break
        if key in seen:
            log.warning("consolidated base %s is its own ancestor; the lineage stops there", base)
            break
        seen.add(key)
        manifest = read_lineage_manifest(base) if base.is_dir() else None
        if not is_consolidated(manifest):
            break
        out.append({"name": manifest.get("name") or base.name, "path": key,
                    "files_trained": [t for t in manifest["files_trained"] if isinstance(t, dict)]})
        parent = manifest["parent_base"].get("path")
        base = Path(parent) if isinstance(parent, str) and parent else None
    return out


def _adapter_trained(state: dict | None, folder: Path) -> Iterator[dict]:
    """The trained jobs of an adapter state read from ``folder``, one sealed segment at a time; a segment that
    cannot be read ends the list with a warning (the checkers report it as unreadable)."""
    try:
        yield from iter_trained(state, folder)
    except ValueError as e:
        log.warning("%s: %s", folder, e)


def iter_model_trained(home: Home, base_model: str | None = None) -> Iterator[dict[str, Any]]:
    """``model_trained`` one entry at a time (dedupe stops at the first match, reading no further segment)."""
    for b in reversed(base_chain(live_base_folder(home, base_model))):
        for t in b["files_trained"]:
            yield {**t, "where": f"consolidated base {b['name']}"}
    for t in _adapter_trained(_live_state(home), home.current_model):
        yield {**t, "where": "adapter"}


def model_trained(home: Home, base_model: str | None = None) -> list[dict[str, Any]]:
    """Every file trained into the live model, oldest base first, each with ``where`` ("adapter" or "base NAME")."""
    return list(iter_model_trained(home, base_model))


def find_trained(home: Home, sha256: str | None, *, base_model: str | None = None,
                 exclude_job: str | None = None) -> dict[str, Any] | None:
    """The entry of the live model that trained content ``sha256`` (not counting job ``exclude_job``), or None."""
    if not sha256:
        return None
    return next((t for t in iter_model_trained(home, base_model)
                 if t.get("sha256") == sha256 and t.get("job_id") != exclude_job), None)


def ever_trained_ids(home: Home) -> set[str]:
    """Job ids recorded as trained anywhere in the home: live adapter, every snapshot, every consolidated base."""
    ids = {t.get("job_id") for t in _adapter_trained(_live_state(home), home.current_model)}
    for root, key in ((home.snapshots, "trained"), (home.consolidated_models, "files_trained")):
        try:
            folders = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")]
        except OSError:
            continue
        for p in folders:
            m = read_lineage_manifest(p) or {}
            if key == "trained":  # a snapshot's manifest lists its newest jobs; the older are sealed beside it
                ids |= {t.get("job_id") for t in _adapter_trained(m, p)}
            elif isinstance(m.get(key), list):
                ids |= {t.get("job_id") for t in m[key] if isinstance(t, dict)}
    for b in base_chain(live_base_folder(home)):  # a base outside the home's consolidated_models/
        ids |= {t.get("job_id") for t in b["files_trained"]}
    ids.discard(None)
    return ids


__all__ = ["base_chain", "ever_trained_ids", "find_trained", "is_consolidated", "iter_model_trained",
           "live_base_folder", "model_trained"]
