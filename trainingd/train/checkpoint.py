"""The trainer's side of checkpoints: the layout itself is ``trainingd.contracts.checkpoint`` (stdlib only).

This module adds the trainer's own parts (the check of a manifest on resume, the library versions each manifest
records) and re-exports the layout under its old name for the trainer's modules.
"""

from __future__ import annotations

import json

from trainingd.config import locked_changes
from trainingd.contracts.checkpoint import (  # noqa: F401 - the trainer's modules use ckpt.<name>
    ADAPTER_FILES, COMPLETE, MICRO_BATCH_FILE, STATE, AdapterMismatch, CheckpointMismatch, base_model_hash,
    has_adapter, latest_complete, list_complete, prune, publish_adapter, remove_checkpoints, retire,
    save_checkpoint, step_dir_name)


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
