"""``<checkpoint>/step-NNNNNN/manifest.json``: what a checkpoint belongs to. Stdlib only.

Written by the trainer (``trainingd.train.checkpoint.save_checkpoint`` through ``write_manifest``) into the
checkpoint's temporary folder; the whole folder is then fsynced, renamed into place and marked ``COMPLETE``,
so the manifest is atomic with its checkpoint. Read by the trainer when it resumes (``read_manifest``), which
refuses a checkpoint whose identity differs from the job it is running::

    {"job_id": "000012-chat", "data_sha256": "...", "data_file": "/abs/queue/processing/.../chat.jsonl",
     "base_model": "/abs/base", "base_model_hash": "...",
     "locked": {"base_model": ..., "lora.r": 16, ...},
     "adapter_generation": "5f0c...",   # generation_id of the adapter the job started from (adapter_state)
     "config": {...}, "versions": {"torch": ..., "transformers": ..., "peft": ...},
     "total_steps": 120, "precision": "fp32",
     "step": 40, "saved_at": 1764470000.5}   # seconds since the epoch

    python3 -c "from trainingd.contracts.manifest import read_manifest; print(read_manifest('DIR/step-000004'))"
"""

from __future__ import annotations

import json
import time
from pathlib import Path

FILE = "manifest.json"


def write_manifest(folder: Path | str, manifest: dict, *, step: int) -> None:
    """Write the manifest into a checkpoint folder being assembled (the caller fsyncs and renames the folder)."""
    doc = {**manifest, "step": step, "saved_at": time.time()}
    (Path(folder) / FILE).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def read_manifest(folder: Path | str) -> dict:
    """The manifest of a complete checkpoint. Raises OSError or ValueError when it cannot be read."""
    data = json.loads((Path(folder) / FILE).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{Path(folder) / FILE} is not a JSON object")
    return data
