"""Consolidation: fold the live adapter into a new, versioned base under ``consolidated_models/<stamp>/``.

    python3 consolidate_model.py --description "what was trained" [--yes] [--home DIR]
    python3 consolidate_model.py --switch consolidated_models/<stamp> [--home DIR]
    python3 consolidate_model.py --list [--home DIR]

Steps: refuse while a job trains (a paused daemon is fine; ``--yes`` also needs no job in processing/), check
free disk, snapshot the adapter (a pinned backup), merge it into the fp32 base (``python -m trainingd.train.merge``)
into ``consolidated_models/.tmp-<stamp>-*``, verify the merged logits against base + adapter, write
``manifest.json`` and ``README.md``, then one rename makes ``consolidated_models/<stamp>/``. A failed check
removes the temporary folder: no half-written base is ever left under its name. ``--yes`` (the base is a
locked key) switches ``config.json``'s ``base_model`` to the new folder atomically and starts a fresh
adapter (the old one stays a pinned snapshot); the previous base stays on disk.

This module never imports torch: the merge runs as its own process (``trainingd.entry_points``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from trainingd import __version__
from trainingd.atomic_ops import atomic_write_json, fsync_dir, publish_folder, read_json, retire_folder
from trainingd.contracts.checkpoint import ADAPTER_CONFIG
from trainingd.contracts.adapter_state import read_adapter_state, trained_entries
from trainingd.entry_points import package_env, trainer_tool
from trainingd.contracts.lineage_manifest import read_lineage_manifest, write_lineage_manifest
from trainingd.instance import is_daemon_running, read_pid
from trainingd.paths import Home
from trainingd.lifecycle.snapshots import has_adapter, lineage, quiet_reason, start_fresh_adapter, take_snapshot

log = logging.getLogger(__name__)



class ConsolidationError(Exception):
    """Consolidation refused or failed; nothing new is left under consolidated_models/."""


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def needed_bytes(base: Path) -> int:
    """Room for the merged model (fp32: twice a bf16/fp16 base) and its tokenizer, with a 10% margin."""
    size = folder_bytes(base)
    cfg = read_json(base / "config.json", {}) or {}
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    factor = 2 if dtype in ("bfloat16", "float16") else 1
    return int(size * factor * 1.1)


def _readme(manifest: dict[str, Any]) -> str:
    v = manifest["verification"]
    tol, max_diff = v["tolerance"], f"{v['max_abs_logit_diff']:.3g}"
    files = "\n".join(f"{i}. {t.get('file')} (job {t.get('job_id')}, {t.get('steps')} steps)"
                      for i, t in enumerate(manifest["files_trained"], 1)) or "(none)"
    return f"""# {manifest['name']}: consolidated base model

{manifest['description']}

- Created: {manifest['created_at']}
- Parent base: `{manifest['parent_base']['path']}` (hash `{(manifest['parent_base']['hash'] or '')[:16]}`)
- Adapter merged: generation {manifest['adapter']['generation']} of `{manifest['adapter']['model_name']}`
  (backup snapshot `{manifest['backup_snapshot']}`), LoRA r={manifest['adapter']['lora'].get('r')}
- Weights: float32 safetensors, merged with peft `merge_and_unload` from the full-precision base
- Verified on {v['prompts']} fixed prompts ({v['tokens']} tokens): max |logit difference| {max_diff}
  (tolerance {tol['max_abs_logit_diff']:g}), mean KL {v['mean_kl']:.3g} (tolerance {tol['mean_kl']:g})

## Files trained into it, in order
{files}

Use it as a base: set `"base_model": "{manifest['config_value']}"` in config.json (a locked key), or run
`python3 consolidate_model.py --switch {manifest['config_value']}`.
"""


def _config_value(home: Home, folder: Path) -> str:
    try:
        return str(folder.relative_to(home.root))
    except ValueError:
        return str(folder)


def merge_in_subprocess(base: Path, adapter: Path, out: Path, merge_command: Sequence[str] | None = None) -> dict:
    """Run ``python -m trainingd.train.merge BASE ADAPTER OUT`` and return its report (torch stays over there).

    ``merge_command`` replaces the command before the three paths (a test passes one that spoils a weight).
    """
    report_file = out.parent / f"{out.name}.report.json"
    cmd = [*(merge_command or trainer_tool("merge")), str(base), str(adapter), str(out), "--report", str(report_file)]
    try:
        run = subprocess.run(cmd, env=package_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True)
        report = read_json(report_file, None)
    finally:
        report_file.unlink(missing_ok=True)
    if run.returncode not in (0, 1) or not isinstance(report, dict):
        tail = "\n".join(run.stderr.strip().splitlines()[-15:])
        raise ConsolidationError(f"the merge exited {run.returncode} without a report; no new base was written. "
                                 f"Its last lines:\n{tail}")
    return report


def consolidate(home: Home, description: str, *, yes: bool = False,
                merge_command: Sequence[str] | None = None) -> dict[str, Any]:
    """Merge, verify and publish a new base; with ``yes`` switch to it. Raises ConsolidationError."""
    if not description.strip():
        raise ConsolidationError("--description is required: say what was trained (it goes into the manifest)")
    why = quiet_reason(home, allow_paused_job=not yes)
    if why:
        raise ConsolidationError(f"consolidation refused: {why}")
    cm = home.current_model
    if not has_adapter(cm):
        raise ConsolidationError(f"no adapter in {cm}: train something first")
    state = read_adapter_state(cm) or {}
    base = Path(state.get("base_model") or "")
    if not (base / "config.json").is_file():
        raise ConsolidationError(f"the adapter's base model {base} is not on disk")
    from trainingd.lifecycle.approval import base_hash

    parent_hash = base_hash(base)
    if state.get("base_model_hash") and parent_hash != state["base_model_hash"]:
        raise ConsolidationError(f"the base model in {base} changed since the adapter was trained on it: "
                                 "merging would build on other weights; restore the base first")
    home.consolidated_models.mkdir(parents=True, exist_ok=True)
    need, free = needed_bytes(base), shutil.disk_usage(home.consolidated_models).free
    if free < need:
        raise ConsolidationError(f"not enough free disk in {home.consolidated_models}: {free / 2**30:.2f} GiB free, "
                                 f"{need / 2**30:.2f} GiB needed for the merged model")
    backup = take_snapshot(home, reason="consolidate", label="before-consolidation")
    assert backup is not None
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    final = home.consolidated_models / stamp
    n = 2
    while final.exists():
        final, n = home.consolidated_models / f"{stamp}-{n}", n + 1
    tmp = home.consolidated_models / f".tmp-{final.name}-{time.time_ns()}"
    try:
        report = merge_in_subprocess(base, backup, tmp, merge_command)
        if not report["ok"]:
            raise ConsolidationError(
                f"verification failed: max |logit difference| {report['max_abs_logit_diff']:.3g} "
                f"(tolerance {report['tolerance']['max_abs_logit_diff']:g}), mean KL {report['mean_kl']:.3g} "
                f"(tolerance {report['tolerance']['mean_kl']:g}); no new base was written "
                f"(the adapter is unchanged, backup snapshot {backup.name})")
        adapter_cfg = read_json(backup / ADAPTER_CONFIG, {}) or {}
        parent_manifest = read_lineage_manifest(base)
        chain = lineage(home)["chain"]
        manifest = {
            "name": final.name, "description": description.strip(),
            "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "parent_base": {"path": str(base), "hash": parent_hash,
                            "consolidated": parent_manifest.get("name") if isinstance(parent_manifest, dict)
                            and "parent_base" in parent_manifest else None},
            "base_model_hash": None, "backup_snapshot": backup.name,
            "snapshots_merged": [c["snapshot"] for c in chain if c["snapshot"]] + [backup.name],
            "files_trained": trained_entries(state, cm),
            "adapter": {"generation": state.get("generation"), "generation_id": state.get("generation_id"),
                        "model_name": state.get("model_name"),
                        "lora": {k: adapter_cfg.get(k) for k in ("r", "lora_alpha", "target_modules")}},
            "verification": report, "dtype": "float32", "code_version": __version__,
            "config_value": _config_value(home, final)}
        from trainingd.lifecycle.approval import base_hash as hash_of

        manifest["base_model_hash"] = hash_of(tmp)
        write_lineage_manifest(tmp, manifest)
        (tmp / "README.md").write_text(_readme(manifest))
        publish_folder(tmp, final, point="consolidate")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("consolidated base %s written and verified", final)
    out: dict[str, Any] = {"consolidated": str(final), "manifest": manifest, "backup_snapshot": backup.name,
                           "switched": False,
                           "switch_command": f"python3 consolidate_model.py --switch {manifest['config_value']} "
                                             f"--home {home.root}"}
    if yes:
        out.update(switch_base(home, final, backup_taken=True))
    return out


def switch_base(home: Home, folder: Path, *, backup_taken: bool = False) -> dict[str, Any]:
    """Point config.json's ``base_model`` at ``folder`` (atomically) and start a fresh adapter."""
    folder = (home.root / folder) if not Path(folder).is_absolute() else Path(folder)
    if not (folder / "config.json").is_file():
        raise ConsolidationError(f"{folder} is not a model folder")
    why = quiet_reason(home)
    if why:
        raise ConsolidationError(f"switching the base refused: {why}")
    data = read_json(home.config, {}) or {}
    old = data.get("base_model")
    data["base_model"] = _config_value(home, folder.resolve())
    from trainingd.config import ConfigError, parse_config

    try:
        parse_config(data)
    except ConfigError as e:
        raise ConsolidationError(f"config.json would not be valid: {e}") from None
    fresh = (start_fresh_adapter(home, reason="consolidate", label="before-base-switch") if not backup_taken
             else _empty_adapter(home))
    atomic_write_json(home.config, data)
    log.info("config.json base_model: %s -> %s", old, data["base_model"])
    reloaded = False
    if is_daemon_running(home):
        pid = read_pid(home)
        if pid:
            os.kill(pid, signal.SIGHUP)  # the daemon re-reads config.json; the fresh adapter follows the new base
            reloaded = True
    return {"switched": True, "old_base_model": old, "base_model": data["base_model"],
            "archived": fresh.get("archived"), "daemon_reloaded": reloaded}


def _empty_adapter(home: Home) -> dict[str, Any]:
    """The adapter was just snapshotted (the consolidation's backup): empty current_model/ for a fresh one."""

    if home.current_model.exists():
        retire_folder(home.current_model)
    home.current_model.mkdir(parents=True, exist_ok=True)
    fsync_dir(home.root)
    return {"archived": None}


def list_bases(home: Home) -> list[dict[str, Any]]:
    """Every consolidated base, oldest first, with its description and parent."""
    out = []
    root = home.consolidated_models
    for p in sorted(root.iterdir()) if root.is_dir() else ():
        m = read_lineage_manifest(p) if p.is_dir() and not p.name.startswith(".") else None
        if isinstance(m, dict):
            out.append({"name": p.name, "path": str(p), "description": m.get("description"),
                        "created_at": m.get("created_at"), "parent": m.get("parent_base", {}),
                        "files_trained": len(m.get("files_trained") or []),
                        "verification": {k: (m.get("verification") or {}).get(k)
                                         for k in ("max_abs_logit_diff", "mean_kl", "ok")}})
    return out


def format_bases(items: list[dict[str, Any]], current: str | None) -> str:
    if not items:
        return "no consolidated bases under consolidated_models/"
    lines = []
    for b in items:
        parent = b["parent"].get("consolidated") or b["parent"].get("path")
        mark = " (current base)" if current and Path(current).name == b["name"] else ""
        lines.append(f"{b['name']}{mark}: {b['description']}\n    from {parent}; {b['files_trained']} file(s); "
                     f"max |logit diff| {b['verification']['max_abs_logit_diff']}")
    return "\n".join(lines)


def format_result(out: dict[str, Any]) -> str:
    v = out["manifest"]["verification"]
    lines = [f"consolidated base written: {out['consolidated']}",
             f"verified: max |logit difference| {v['max_abs_logit_diff']:.3g} (tolerance "
             f"{v['tolerance']['max_abs_logit_diff']:g}), mean KL {v['mean_kl']:.3g} (tolerance "
             f"{v['tolerance']['mean_kl']:g}) on {v['prompts']} prompts",
             f"backup of the adapter: snapshots/{out['backup_snapshot']}"]
    if out.get("switched"):
        lines.append(f"config.json base_model: {out['old_base_model']} -> {out['base_model']}; a fresh adapter "
                     "starts with the next job" + (" (daemon reloaded)" if out.get("daemon_reloaded") else ""))
    else:
        lines.append(f"to train on it (base_model is a locked key; a fresh adapter starts): {out['switch_command']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from trainingd import exit_codes as ec

    p = argparse.ArgumentParser(prog="consolidate_model.py", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", metavar="DIR", help="home folder (default: $TRAININGD_HOME, else the current directory)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--description", help="what was trained (recorded in the manifest and README)")
    what.add_argument("--list", action="store_true", help="list the consolidated bases with their lineage")
    what.add_argument("--switch", metavar="DIR", help="make a consolidated base config.json's base_model and "
                                                      "start a fresh adapter")
    p.add_argument("--yes", action="store_true", help="with --description: also switch to the new base")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    home = Home.at(args.home)
    try:
        if args.list:
            items = list_bases(home)
            current = (read_json(home.config, {}) or {}).get("base_model")
            print(json.dumps(items, indent=2) if args.json else format_bases(items, current))
            return ec.OK
        if args.switch:
            out = switch_base(home, Path(args.switch))
            print(json.dumps(out, indent=2) if args.json else
                  f"config.json base_model: {out['old_base_model']} -> {out['base_model']}; a fresh adapter starts "
                  f"with the next job (old adapter: snapshot {out['archived']})")
            return ec.OK
        out = consolidate(home, args.description, yes=args.yes)
    except ConsolidationError as e:
        print(json.dumps({"ok": False, "error": str(e)}) if args.json else f"error: {e}", file=sys.stderr)
        return ec.ERROR
    print(json.dumps(out, indent=2, default=str) if args.json else format_result(out))
    return ec.OK
