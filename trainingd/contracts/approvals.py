"""``logs/approvals.jsonl``: every accepted change of a locked config key, append-only. Stdlib only.

Appended by ``trainingd config approve`` (= ``config_validator.py --approve``, and ``trainingd preset NAME
--approve``: ``trainingd.lifecycle.approval.approve``) with ``atomic_ops.append_jsonl``, one line per approval,
after the same record went into the live adapter's ``adapter_state.json`` (its ``approvals`` list, which travels
with the adapter into snapshots). This log stays in the home whatever happens to the adapter; it is read by people
(who changed what, where and when) and by ``read_approvals`` (a torn last line is skipped)::

    {"at": "2026-11-30T10:00:00Z",        # UTC, when it was approved
     "who": "ops",                         # --who, else the login name
     "host": "gpu-box",
     "changes": [{"key": "base_model", "adapter": "/old/base", "config": "/new/base"}],   # as config.locked_changes
     "adapter_generation": 3,              # the adapter the change was approved for (adapter_state.json)
     "generation_id": "5f0c..."}

    python3 -c "from trainingd.contracts.approvals import read_approvals; from trainingd.paths import Home
    print(read_approvals(Home.at('.')))"
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainingd.atomic_ops import append_jsonl, read_jsonl
from trainingd.contracts.job import now_iso
from trainingd.paths import Home


def log_path(home: Home) -> Path:
    return home.approvals_log


def make_record(*, who: str, host: str, changes: list[dict[str, Any]], adapter_generation: Any,
                generation_id: Any) -> dict[str, Any]:
    """One approval, stamped now."""
    return {"at": now_iso(), "who": who, "host": host, "changes": changes, "adapter_generation": adapter_generation,
            "generation_id": generation_id}


def append_approval(home: Home, record: dict[str, Any]) -> None:
    append_jsonl(log_path(home), record)


def read_approvals(home: Home) -> list[dict[str, Any]]:
    """Every complete record, oldest first (an empty list when nothing was ever approved)."""
    return [r for r in read_jsonl(log_path(home)) if isinstance(r, dict)]
