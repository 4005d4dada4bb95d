"""Conditions of the whole home that hold every job (invariant 9), and the live adapter's state they are read from.

    condition = adapter_condition(home, cfg, os.getpid())   # a locked key of config.json the adapter disagrees with
    gate_block, condition = gate_view(home, cfg)            # the gate's streak of rejections, from the history

Each condition carries ``ways_out``: the commands a person runs to resolve it, shown in the status and the log.
"""

from __future__ import annotations

import json
import logging
import os

from trainingd.atomic_ops import append_jsonl
from trainingd.config import Config, locked_changes
from trainingd.contracts.adapter_state import read_adapter_state
from trainingd.contracts.adapter_state import trained_entries as adapter_trained
from trainingd.contracts.job import now_iso
from trainingd.contracts.status import read_history
from trainingd.daemon.history_fold import JsonlFold
from trainingd.lifecycle import gate
from trainingd.paths import Home

log = logging.getLogger("trainingd.daemon.loop")


def read_live_adapter_state(home: Home) -> dict | None:
    """``current_model/adapter_state.json``, or None when there is none or it is unreadable."""
    try:
        return read_adapter_state(home.current_model)
    except (ValueError, OSError):
        log.warning("current_model/adapter_state.json is unreadable; treating the adapter as empty")
        return None


def trained_entries(home: Home) -> list[dict]:
    """The trained jobs of ``current_model/adapter_state.json`` (jobs durably in the adapter); empty when unreadable."""
    try:
        return adapter_trained(read_live_adapter_state(home), home.current_model)
    except ValueError as e:
        log.warning("current_model/: %s; treating the adapter as empty", e)
        return []


def adapter_condition(home: Home, cfg: Config, pid: int) -> dict | None:
    """A locked key of config.json that differs from the live adapter: a condition of the whole home.

    Returns ``{"kind", "message", "changes": [{"key", "adapter", "config"}], "ways_out"}`` or None.
    """
    state = read_live_adapter_state(home)
    changes = locked_changes((state or {}).get("locked"), cfg.locked_values())
    if not changes:
        return None
    what = "; ".join(f"config key {c['key']!r} is {json.dumps(c['config'])} in config.json but the live adapter "
                     f"was made with {json.dumps(c['adapter'])}" for c in changes)
    return {"kind": "adapter_mismatch", "message": f"{what}: no job starts until this is resolved",
            "changes": changes, "ways_out": ways_out(pid)}


def ways_out(pid: int) -> list[str]:
    return [f"set it back in config.json, then reload: kill -HUP {pid} (or systemctl reload trainingd)",
            "or approve the new value for this adapter: python3 config_validator.py --approve (a LoRA shape "
            "change cannot be approved)",
            "or keep the old adapter as a snapshot and start a fresh one: trainingd adapter new [--keep-as NAME] "
            "(daemon paused or stopped; or by hand: stop the daemon, move current_model/ aside)"]


def gate_ways_out(pid: int) -> list[str]:
    return ["look at the rejected candidates: trainingd snapshot list (snapshots/*-rejected; each manifest's "
            "\"gate\" holds both scores) and the status's gate block",
            "publish one by hand if it is good after all: trainingd promote SNAPSHOT (the streak ends)",
            "or keep the live adapter and go on: training_controller.py resume (the streak starts again)",
            "or change the gate (gate.min_delta, gate.max_forgetting, gate.max_rejections_in_row, gate.enabled) "
            f"or the data in config.json, then reload: kill -HUP {pid}"]


def gate_view(home: Home, cfg: Config, fold: JsonlFold | None = None) -> tuple[dict, dict | None]:
    """The status's gate block (the streak and last decision, from the history: through ``fold``, the daemon's,
    only its new lines) and the ``regressing`` condition, or None."""
    try:
        history = fold.update() if fold is not None else read_history(home)
    except (OSError, ValueError) as e:
        log.warning("status/history.jsonl unreadable (%s); the gate's streak is not known", e)
        history = []
    g = cfg.gate
    block = gate.status_block(history, enabled=g.enabled, limit=g.max_rejections_in_row)
    if not g.enabled:
        return block, None
    return block, gate.regressing_condition(block["rejections_in_row"], g.max_rejections_in_row,
                                            gate_ways_out(os.getpid()))


def reset_gate_streak(home: Home, why: str) -> None:
    """A person looked (resume while regressing): the history records that the streak of rejections starts again."""
    append_jsonl(home.history, {"kind": gate.STREAK_RESET, "why": why, "at": now_iso()})
    log.info("the gate's streak of rejections is reset (%s); jobs start again", why)
