"""``manifest.json`` of a snapshot (``snapshots/<stamp>_<job>/``) and of a consolidated base
(``consolidated_models/<stamp>/``): where an adapter or a base came from. Stdlib only.

A snapshot's (``trainingd.lifecycle.snapshots``)::

    {"name", "created_at", "sequence", "reason", "label", "base_model", "base_model_hash", "base_content_sha256",
     "generation", "generation_id", "parent", "trained_file": {"job_id", "name", "sha256", "lines",
     "trained_tokens"}, "steps", "final_loss", "eval_loss", "config", "code_version", "trained": [...]}

A consolidated base's (``trainingd.lifecycle.consolidate``)::

    {"name", "description", "created_at", "parent_base": {"path", "hash", "consolidated"}, "base_model_hash",
     "backup_snapshot", "snapshots_merged", "files_trained", "adapter", "verification", "dtype", "code_version"}

Both are written into a folder being assembled (renamed into place afterwards), so the write is a plain
atomic one; a folder without a readable manifest is not a snapshot or a base.
"""

from __future__ import annotations

from pathlib import Path

from trainingd.atomic_ops import atomic_write_json, read_json

FILE = "manifest.json"


def write_lineage_manifest(folder: Path | str, manifest: dict) -> None:
    atomic_write_json(Path(folder) / FILE, manifest)


def read_lineage_manifest(folder: Path | str) -> dict | None:
    """The manifest, or None when the folder has none or it is not a JSON object."""
    try:
        data = read_json(Path(folder) / FILE, None)
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None
