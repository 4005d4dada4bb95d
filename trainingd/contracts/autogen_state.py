"""``status/autogen_state.json``: where the daemon's auto-generate stands across restarts. Stdlib only.

Written by the daemon (``trainingd.daemon.autogen.AutoGenerator``) with ``atomic_ops.atomic_write_json`` each time
a complete generated batch reached ``inbox/``; read by the next daemon at start, so each batch takes the next seed
even across restarts and no two batches are alike. Its totals reach people through the status file's
``auto_generate`` block (the monitor and the CLIs read that, not this file)::

    {"config_seed": 0,           # auto_generate.seed when this was written: another seed in config.json starts over
     "next_seed": 8,             # the seed of the next request
     "batches": 8,               # every batch recorded here
     "examples": 1600,           # and their lines
     "last": {"seed": 7, "file": "syllo_autogen_20261130_100000_count200.jsonl", "count": 200, "level": 1,
              "at": "2026-11-30T10:00:00Z"}}

A missing file reads as ``{}`` (start from ``auto_generate.seed``); an unreadable one raises, and the daemon says so
and starts again from ``auto_generate.seed``.

    python3 -c "from trainingd.contracts.autogen_state import read_autogen_state as r; from trainingd.paths import Home
    print(r(Home.at('.')))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainingd.atomic_ops import atomic_write_json, read_json
from trainingd.contracts.job import now_iso
from trainingd.paths import Home


def state_path(home: Home) -> Path:
    return home.autogen_state


def read_autogen_state(home: Home) -> dict[str, Any]:
    """The saved state; ``{}`` when there is none. Raises ValueError or OSError when the file cannot be read."""
    doc = read_json(state_path(home), {})
    return doc if isinstance(doc, dict) else {}


def write_autogen_state(home: Home, doc: dict[str, Any]) -> None:
    atomic_write_json(state_path(home), doc)


def next_seed(doc: dict[str, Any], config_seed: int) -> int:
    """The seed of the next request: the saved one while ``auto_generate.seed`` is the one it was saved under."""
    if doc.get("config_seed") == config_seed and isinstance(doc.get("next_seed"), int):
        return doc["next_seed"]
    return config_seed


def after_batch(doc: dict[str, Any], *, config_seed: int, seed: int, level: int, file: str,
                count: int) -> dict[str, Any]:
    """The state once batch ``seed`` (``count`` lines, in ``inbox/`` as ``file``) arrived."""
    return {"config_seed": config_seed, "next_seed": seed + 1,
            "batches": int(doc.get("batches") or 0) + 1,
            "examples": int(doc.get("examples") or 0) + count,
            "last": {"seed": seed, "file": file, "count": count, "level": level, "at": now_iso()}}


def totals(doc: dict[str, Any]) -> dict[str, Any]:
    """What the status file's ``auto_generate`` block shows of it."""
    return {"batches": doc.get("batches", 0), "examples": doc.get("examples", 0), "last": doc.get("last")}
