"""``status/layer_activity.json``: how much each LoRA module changes while a job trains. Stdlib only.

Written by the trainer (``trainingd.train.layer_stats``) every ``layer_stats_steps`` optimizer steps through
``write_layer_activity`` (atomically, not fsynced: a view, rewritten at the next report); a standalone
``train.py`` run writes the same document to ``<output-dir>/layer_activity.json`` (``FILE``). Read by the
monitor (``read_layer_activity``) for its layer heatmap. ``python3 lora_monitor.py --json`` prints the same
rows for a saved adapter. Fields (``null`` when unknown, never NaN)::

    schema_version      1
    job_id              the job being trained (null for an offline report)
    step                the optimizer step this report was made after
    previous_step       the step ``delta_norm`` is measured from (0: the adapter this run started with)
    updated_at          seconds since the epoch (float)
    modules             one row per LoRA module, in model order:
      name              the module's path without PEFT's wrapper prefix ("model.layers.3.self_attn.q_proj")
      layer             the decoder layer index (int; null for a module outside the layer stack)
      module            the module type, the last part of the name ("q_proj", "down_proj", ...)
      update_norm       ||scaling * B @ A||_F, the size of the module's whole LoRA update
      delta_norm        ||ΔW||_F between ``previous_step`` and ``step`` (null when unknown)
      grad_norm         ||(∇A, ∇B)||, the gradient of the module's LoRA factors at ``step`` before clipping

The trainer also puts ``summary(doc)`` (the top changers) into its progress as ``layer_activity_summary``,
and the daemon carries it into the status file under the same key.

    python3 -c "from trainingd.contracts.layer_activity import read_layer_activity; print(read_layer_activity('.'))"
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional, TypedDict

from trainingd.atomic_ops import atomic_write_json, json_safe, read_json
from trainingd.paths import Home

SCHEMA_VERSION = 1
FILE = "layer_activity.json"
ROW_FIELDS = ("name", "layer", "module", "update_norm", "delta_norm", "grad_norm")
TOP_K = 5


class ModuleRow(TypedDict):
    name: str
    layer: Optional[int]
    module: str
    update_norm: Optional[float]
    delta_norm: Optional[float]
    grad_norm: Optional[float]


class LayerActivityDoc(TypedDict, total=False):
    schema_version: int
    job_id: Optional[str]
    step: Optional[int]
    previous_step: Optional[int]
    updated_at: float
    modules: list[ModuleRow]


def make_doc(rows: list[ModuleRow] | list[dict], *, job_id: str | None, step: int | None,
             previous_step: int | None) -> LayerActivityDoc:
    """A schema-1 document from module rows (extra keys in a row are dropped)."""
    return json_safe({"schema_version": SCHEMA_VERSION, "job_id": job_id, "step": step,
                      "previous_step": previous_step, "updated_at": time.time(),
                      "modules": [{k: r.get(k) for k in ROW_FIELDS} for r in rows]})  # type: ignore[return-value]


def write_layer_activity(path: Path, doc: LayerActivityDoc | dict) -> None:
    """Replace the file atomically (not fsynced: a view). Raises OSError/ValueError."""
    atomic_write_json(Path(path), doc, durable=False)


def read_layer_activity(where: Home | str | os.PathLike) -> LayerActivityDoc | None:
    """The latest report of a home (a ``Home`` or its folder) or of a file path; None when missing or unreadable."""
    if isinstance(where, Home):
        path = where.layer_activity
    else:
        p = Path(where)
        path = p if p.suffix == ".json" else Home.at(p).layer_activity
    try:
        data = read_json(path, None)
    except (ValueError, OSError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("modules"), list):
        return None
    return data  # type: ignore[return-value]


def summary(doc: LayerActivityDoc | dict, k: int = TOP_K) -> dict:
    """The short form for progress and status: the step and the ``k`` modules that changed most since the last report.

    ``{"step", "previous_step", "modules": count, "update_norm_max", "top": [{name, layer, module, delta_norm,
    update_norm}]}``
    """
    rows = [r for r in doc.get("modules") or [] if isinstance(r, dict)]
    ranked = sorted((r for r in rows if r.get("delta_norm") is not None), key=lambda r: -r["delta_norm"])
    norms = [r["update_norm"] for r in rows if r.get("update_norm") is not None]
    return json_safe({"step": doc.get("step"), "previous_step": doc.get("previous_step"), "modules": len(rows),
                      "update_norm_max": max(norms) if norms else None,
                      "top": [{key: r.get(key) for key in ("name", "layer", "module", "delta_norm", "update_norm")}
                              for r in ranked[:k]]})
