"""Where a run stands: the counters a checkpoint saves in ``state.json`` and a resume restores (torchtune style).

The field names are the keys of ``state.json``; checkpoints written before this class existed resume unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class RunState:
    """The position in the data (``epoch``, ``mb_index``: the next global micro-batch) and the run's counters."""

    epoch: int = 0
    mb_index: int = 0
    step: int = 0
    tokens_seen: int = 0
    trained_tokens: int = 0
    examples_done: int = 0
    loss: float | None = None
    loss_ema: float | None = None
    eval_loss: float | None = None
    grad_norm: float | None = None
    learning_rate: float | None = None
    world_size: int = 1
    strategy: str = "ddp"
    micro_batch_size: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Take every known key of ``saved`` (a ``state.json``); keys it lacks keep their values, others are ignored."""
        for f in dataclasses.fields(self):
            if f.name in saved:
                setattr(self, f.name, saved[f.name])
