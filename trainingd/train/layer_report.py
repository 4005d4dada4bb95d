"""The per-LoRA-module table of a saved adapter, offline: ``python3 lora_monitor.py``.

    python3 lora_monitor.py [--home DIR] [--adapter DIR] [--compare DIR2] [--json]

Prints one row per LoRA module of the adapter (default: the home's ``current_model/``): its layer, module type
and ``||scaling * B @ A||_F``. With ``--compare DIR2`` it also prints how far each module moved from the adapter in
DIR2 (``||ΔW||_F``), e.g. between two snapshots. ``--json`` prints the layer-activity document
(``trainingd.contracts.layer_activity``) the trainer writes during training, with ``job_id`` and ``step`` null.
Needs torch and safetensors (the trainer's dependencies); the numbers come from the small factors only.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from trainingd import exit_codes
from trainingd.contracts.checkpoint import ADAPTER_WEIGHTS
from trainingd.contracts.layer_activity import make_doc
from trainingd.cli.formatting import print_json
from trainingd.paths import Home

log = logging.getLogger(__name__)


def adapter_report(adapter: Path, compare: Path | None = None) -> dict[str, Any]:
    """The layer-activity document of a saved adapter (``delta_norm`` from ``compare`` when given)."""
    from trainingd.train.layer_stats import adapter_rows

    doc = dict(make_doc(adapter_rows(adapter, compare), job_id=None, step=None, previous_step=None))
    doc["adapter"] = str(adapter)
    doc["compare"] = str(compare) if compare is not None else None
    return doc


def format_report(doc: dict[str, Any]) -> str:
    rows = doc["modules"]
    compare = doc.get("compare") is not None
    width = max([len(r["name"]) for r in rows] + [6])
    head = f"{'module':<{width}}  {'layer':>5}  {'type':<10}  {'update_norm':>12}"
    if compare:
        head += f"  {'delta_norm':>12}  {'delta/update':>12}"
    lines = [f"adapter {doc['adapter']}" + (f" compared with {doc['compare']}" if compare else ""), head]
    for r in rows:
        line = (f"{r['name']:<{width}}  {'-' if r['layer'] is None else r['layer']:>5}  {r['module']:<10}  "
                f"{r['update_norm']:>12.6g}")
        if compare:
            delta, upd = r["delta_norm"], r["update_norm"]
            rel = f"{delta / upd:.3g}" if delta is not None and upd else "-"
            line += f"  {'-' if delta is None else format(delta, '.6g'):>12}  {rel:>12}"
        lines.append(line)
    lines.append(f"{len(rows)} LoRA modules")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lora_monitor.py", description="Print the per-module update norms of a saved "
                                "LoRA adapter, or the change between two adapter snapshots.")
    p.add_argument("--home", help="the daemon's home (default: $TRAININGD_HOME or the current directory)")
    p.add_argument("--adapter", type=Path, help="adapter folder (default: the home's current_model/)")
    p.add_argument("--compare", type=Path, help="an earlier adapter folder: also print each module's change from it")
    p.add_argument("--json", action="store_true", help="print the layer-activity document as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    adapter = a.adapter if a.adapter is not None else Home.at(a.home).current_model
    for folder in (adapter, a.compare):
        if folder is not None and not (Path(folder) / ADAPTER_WEIGHTS).is_file():
            print(f"no adapter in {folder} (adapter_model.safetensors is missing)")
            return exit_codes.ERROR
    try:
        doc = adapter_report(adapter, a.compare)
    except (OSError, ValueError, KeyError) as e:
        print(f"cannot read the adapter: {e}")
        return exit_codes.ERROR
    if a.json:
        print_json(doc)
    else:
        print(format_report(doc))
    return exit_codes.OK
