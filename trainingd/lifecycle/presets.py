"""Presets: partial configs applied to config.json atomically, each training its own adapter. Stdlib only.

    trainingd preset NAME [--yes] [--approve] [--home DIR]      (toggle_preset.sh NAME is the same)
    trainingd preset --list

A preset is ``presets/NAME.json`` in the home (else the repository's ``presets/``): config keys to set (objects
such as ``lora`` are merged key by key) and, optionally, ``"adapter_folder"``: where that preset's own adapter is
kept while another preset is active (e.g. ``current_model_small``; presets without one share the main adapter,
parked as ``current_model_shared`` meanwhile). The live adapter is always ``current_model/``; switching between
adapters parks it in the active preset's folder and brings the new preset's adapter in (two renames), so one
adapter is never trained with another's settings. The active preset is recorded in
``.preset.json``, written last.

Refusals: a job is running (unless ``--yes``; a switch that swaps adapters needs the daemon paused with no job,
or stopped, even then), and a locked key that would differ from the adapter that becomes live (unless
``--approve``, which records the approval; a LoRA shape change is never approvable: ``trainingd adapter new``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import atomic_write_json, fsync_dir, read_json
from trainingd.config import ConfigError, parse_config, locked_changes
from trainingd.contracts.adapter_state import read_adapter_state
from trainingd.paths import Home

log = logging.getLogger(__name__)

REPO_PRESETS = Path(__file__).resolve().parents[2] / "presets"
ACTIVE = ".preset.json"
DEFAULT = "default"
SHARED = "current_model_shared"


class PresetError(Exception):
    """The preset cannot be applied; the message says why and the way out."""


def preset_dirs(home: Home) -> list[Path]:
    return [home.presets, REPO_PRESETS]


def list_presets(home: Home) -> list[dict[str, Any]]:
    seen: dict[str, dict] = {}
    for d in preset_dirs(home):
        for p in sorted(d.glob("*.json")) if d.is_dir() else ():
            seen.setdefault(p.stem, {"name": p.stem, "path": str(p)})
    return list(seen.values())


def load_preset(home: Home, name: str) -> dict[str, Any]:
    for d in preset_dirs(home):
        p = d / f"{name}.json"
        if p.is_file():
            try:
                data = json.loads(p.read_text())
            except json.JSONDecodeError as e:
                raise PresetError(f"{p}: not valid JSON: {e}") from None
            if not isinstance(data, dict):
                raise PresetError(f"{p}: a preset is a JSON object of config keys")
            return {"name": name, "path": str(p), "values": data}
    known = ", ".join(x["name"] for x in list_presets(home)) or "none"
    raise PresetError(f"no preset {name!r} (presets: {known})")


def active_preset(home: Home) -> dict[str, Any]:
    data = read_json(home.root / ACTIVE, None)
    return data if isinstance(data, dict) and data.get("name") else {"name": DEFAULT, "adapter_folder": SHARED}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _job_running(home: Home) -> bool:
    from trainingd.instance import is_daemon_running

    busy = home.processing.is_dir() and any(p.is_dir() and not p.name.startswith(".")
                                            for p in home.processing.iterdir())
    return is_daemon_running(home) and busy


def apply_preset(home: Home, name: str, *, yes: bool = False, approve: bool = False,
                 who: str | None = None) -> dict[str, Any]:
    preset = load_preset(home, name)
    values = dict(preset["values"])
    folder_name = values.pop("adapter_folder", None) or SHARED
    if "/" in folder_name or folder_name in ("current_model", "", ".", ".."):
        raise PresetError(f"preset {name}: adapter_folder must be a plain folder name other than current_model")
    current = active_preset(home)
    swap = (current.get("adapter_folder") or SHARED) != folder_name
    if _job_running(home) and not yes:
        raise PresetError("a job is being trained: applying a preset now changes the settings of the next job; "
                          "repeat with --yes, or wait")
    if swap:
        from trainingd.lifecycle.snapshots import quiet_reason

        why = quiet_reason(home)
        if why:
            raise PresetError(f"preset {name} trains its own adapter, and swapping adapters needs the daemon quiet: "
                              f"{why}")
    data = read_json(home.config, {}) or {}
    new_data = _merge(data, values)
    try:
        cfg = parse_config(new_data)
    except ConfigError as e:
        raise PresetError(f"preset {name} would make config.json invalid: {e}") from None
    incoming = (home.root / folder_name) if swap else home.current_model
    try:
        state = read_adapter_state(incoming)
    except (ValueError, OSError) as e:
        raise PresetError(f"the adapter state in {incoming} is unreadable: {e}") from None
    changes = locked_changes((state or {}).get("locked"), cfg.locked_values())
    if changes:
        what = "; ".join(f"{c['key']}: adapter {json.dumps(c['adapter'])}, preset {json.dumps(c['config'])}"
                         for c in changes)
        if any(c["key"].startswith("lora.") for c in changes):
            raise PresetError(f"preset {name} changes a locked key of the adapter it would train ({what}); a LoRA "
                              "shape change cannot be approved: give the preset its own adapter_folder, or start a "
                              "fresh adapter (trainingd adapter new)")
        if not approve:
            raise PresetError(f"preset {name} changes a locked key of the adapter it would train ({what}); repeat "
                              "with --approve to accept it for that adapter")
    moved: list[str] = []
    if swap:
        park = home.root / (current.get("adapter_folder") or SHARED)
        if home.current_model.exists() and any(home.current_model.iterdir()):
            if park.exists():
                raise PresetError(f"{park} already exists: the active preset's adapter cannot be parked there")
            os.rename(home.current_model, park)
            moved.append(f"current_model -> {park.name}")
        elif home.current_model.exists():
            home.current_model.rmdir()
        if incoming.exists():
            os.rename(incoming, home.current_model)
            moved.append(f"{incoming.name} -> current_model")
        else:
            home.current_model.mkdir()
        fsync_dir(home.root)
    atomic_write_json(home.config, new_data)
    atomic_write_json(home.root / ACTIVE, {"name": name, "adapter_folder": folder_name, "path": preset["path"]})
    approved = None
    if changes and approve:
        from trainingd.lifecycle.approval import approve as do_approve

        approved = do_approve(home, who=who)["message"]
    reloaded = _reload_daemon(home)
    log.info("preset %s applied (%s)", name, "; ".join(moved) or "same adapter")
    changed = sorted(k for k in values if data.get(k) != new_data.get(k))
    return {"preset": name, "changed_keys": changed, "adapters_moved": moved, "approved": approved,
            "daemon_reloaded": reloaded,
            "message": f"preset {name} applied: {', '.join(changed) or 'no key changed'}"
                       + (f"; {'; '.join(moved)}" if moved else "") + ("; daemon reloaded" if reloaded else "")}


def _reload_daemon(home: Home) -> bool:
    from trainingd.instance import is_daemon_running, read_pid

    if not is_daemon_running(home):
        return False
    pid = read_pid(home)
    if not pid:
        return False
    os.kill(pid, signal.SIGHUP)  # the daemon re-reads config.json (an invalid one would be refused)
    return True
