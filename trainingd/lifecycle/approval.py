"""Locked config keys: approving a change for the live adapter, and checking a whole home. Stdlib only.

    python3 config_validator.py --approve [--who NAME] [--home DIR]     (= trainingd config approve)
    python3 config_validator.py [--home DIR]                            (config + home: every problem listed)

The live adapter's ``adapter_state.json`` records the locked values it was made with; the daemon holds (a
condition of the home) while config.json says otherwise. Approving records config.json's values as the
adapter's (and, for a new ``base_model``, the new base's hash), appends who/what/when to
``logs/approvals.jsonl`` (``trainingd.contracts.approvals``), and the daemon goes on by itself (it re-checks when
adapter_state.json changes; after editing config.json it needs its reload: ``kill -HUP <pid>``). A LoRA shape
change (``lora.r``, ``lora.alpha``, ``lora.target_modules``) is never approvable: the weights have the old shape.
The way out is ``trainingd adapter new``.
"""

from __future__ import annotations

import getpass
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

from trainingd.config import EMBEDDED_BASE_MODEL, ConfigError, load_config, locked_changes, normalize_locked, \
    resolve_base_model
from trainingd.contracts import approvals
from trainingd.contracts.adapter_state import read_adapter_state, write_adapter_state
from trainingd.contracts.checkpoint import base_model_hash
from trainingd.paths import Home

log = logging.getLogger(__name__)



class ApprovalError(Exception):
    """The change cannot be approved; the message says why and the way out."""


def base_folder(home: Home, cfg) -> Path | None:
    """The folder of config.json's base model, when it exists on disk."""
    try:
        base = resolve_base_model(cfg, home.root)
    except ConfigError:
        return None
    return base.path if base.path is not None and Path(base.path, "config.json").is_file() else None


def base_hash(folder: Path) -> str:
    return base_model_hash(folder)


def approve(home: Home, *, who: str | None = None) -> dict[str, Any]:
    """Accept config.json's locked values for the live adapter; raises ApprovalError when it cannot be done."""
    try:
        cfg = load_config(home.config)
    except ConfigError as e:
        raise ApprovalError(str(e)) from None
    state = read_adapter_state(home.current_model)
    if not state:
        return {"approved": [], "message": "nothing to approve: there is no adapter yet (the next job starts one "
                                           "with config.json's values)"}
    changes = locked_changes(state.get("locked"), cfg.locked_values())
    if not changes:
        return {"approved": [], "message": "nothing to approve: config.json's locked keys agree with the adapter"}
    shape = [c for c in changes if c["key"].startswith("lora.")]
    if shape:
        what = "; ".join(f"{c['key']} {json.dumps(c['adapter'])} -> {json.dumps(c['config'])}" for c in shape)
        raise ApprovalError(f"a LoRA shape change cannot be approved for an existing adapter ({what}): its weights "
                            "have the old shape. Start a fresh adapter with `trainingd adapter new [--keep-as NAME]` "
                            "(the current one is kept as a pinned snapshot), or set the keys back in config.json")
    new_state = {**state, "locked": {**normalize_locked(state.get("locked")), **cfg.locked_values()}}
    if any(c["key"] == "base_model" for c in changes):
        folder = base_folder(home, cfg)
        if folder is None:
            raise ApprovalError(f"base_model {cfg.base_model!r} is not a model folder on disk (build or fetch it "
                                "first: the adapter records the new base's content hash)")
        new_state["base_model"] = str(folder.resolve())
        new_state["base_model_hash"] = base_hash(folder)
        from trainingd.lifecycle.home_guard import FIELD, content_hash

        new_state[FIELD] = content_hash(folder, home.cache)
    who = who or getpass.getuser()
    record = approvals.make_record(who=who, host=socket.gethostname(), changes=changes,
                                   adapter_generation=state.get("generation"), generation_id=state.get("generation_id"))
    new_state["approvals"] = [*(state.get("approvals") or []), record]
    new_state["updated_at"] = time.time()
    write_adapter_state(home.current_model, new_state)
    approvals.append_approval(home, record)
    text = "; ".join(f"{c['key']}: {json.dumps(c['adapter'])} -> {json.dumps(c['config'])}" for c in changes)
    log.info("approved by %s: %s", who, text)
    where = approvals.log_path(home).relative_to(home.root)
    return {"approved": changes, "who": who, "message": f"approved for the live adapter by {who}: {text} "
                                                         f"(recorded in {where})"}


def missing_folders(home: Home) -> list[str]:
    """Runtime folders not there yet: notes, not problems (``trainingd init`` and the daemon create them)."""
    return [str(d) for d in home.runtime_dirs() if not d.is_dir()]


def check_home(home: Home) -> list[str]:
    """Every problem of a home: config, base model folder and config, locked keys and base hash against the adapter."""
    problems: list[str] = []
    try:
        cfg = load_config(home.config)
    except ConfigError as e:
        return [str(e)]
    try:
        base = resolve_base_model(cfg, home.root)
    except ConfigError as e:
        problems.append(str(e))
        base = None
    folder = None
    if base is not None and base.path is not None:
        cfg_file = Path(base.path) / "config.json"
        if cfg_file.is_file():
            try:
                model_cfg = json.loads(cfg_file.read_text())
                if not isinstance(model_cfg, dict) or "model_type" not in model_cfg:
                    problems.append(f"{cfg_file} has no model_type: not a transformers model config")
                else:
                    folder = Path(base.path)
            except (OSError, json.JSONDecodeError) as e:
                problems.append(f"{cfg_file} cannot be read: {e}")
        elif cfg.base_model != EMBEDDED_BASE_MODEL and base.kind != "embedded":
            problems.append(f"base model folder {base.path} has no config.json")
    try:
        state = read_adapter_state(home.current_model)
    except (ValueError, OSError) as e:
        problems.append(f"current_model/adapter_state.json is unreadable: {e}")
        state = None
    if state:
        for c in locked_changes(state.get("locked"), cfg.locked_values()):
            how = ("`trainingd adapter new`" if c["key"].startswith("lora.") else
                   "`python3 config_validator.py --approve`")
            problems.append(f"locked key {c['key']!r} is {json.dumps(c['config'])} in config.json but the adapter was "
                            f"made with {json.dumps(c['adapter'])} (set it back, or {how})")
        recorded = state.get("base_model_hash")
        same_base = not any(c["key"] == "base_model" for c in locked_changes(state.get("locked"),
                                                                             cfg.locked_values()))
        if folder is not None and recorded and same_base and base_hash(folder) != recorded:
            problems.append(f"the base model in {folder} changed since the adapter was trained on it (content hash "
                            f"differs): restore it, or start a fresh adapter (`trainingd adapter new`)")
    return problems
