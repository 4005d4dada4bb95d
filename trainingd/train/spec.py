"""What one training run is given: :class:`RunSpec` (explicit paths, the config, the job) and the stop signal.

Both entry points (``python -m trainingd.train`` and ``train.py``) build a spec and hand it to
``trainingd.train.recipe.execute``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trainingd.config import Config


class StopSignal:
    """SIGTERM/SIGINT handler that only records; the loop acts at the next step boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:  # noqa: ARG002 - signal API
        self.signum = signum

    @property
    def requested(self) -> bool:
        return self.signum is not None


@dataclass
class RunSpec:
    """Everything one training run needs, with explicit paths (no knowledge of the home layout)."""

    dataset: Path
    base_model: Path
    output_dir: Path
    """Where the final adapter is published (``current_model/`` in daemon mode)."""
    checkpoint_dir: Path
    """This job's checkpoints: ``step-000NNN/`` folders."""
    cfg: Config
    job_id: str
    init_adapter: Path | None = None
    """Adapter to continue training (``current_model/`` or an adapter folder); None: a new LoRA."""
    progress_path: Path | None = None
    metrics_path: Path | None = None
    tensorboard_dir: Path | None = None
    """This run's TensorBoard folder, used when ``cfg.tensorboard`` is on (None: no event files)."""
    layer_activity_path: Path | None = None
    """Where the per-LoRA-module report goes every ``cfg.layer_stats_steps`` steps (None: computed, not written)."""
    commands: Callable[[], str] | None = None
    """Returns ``run``, ``pause``, ``stop`` or ``skip``; read at every optimizer-step boundary."""
    resume: bool = True
    """Resume from the newest complete matching checkpoint in ``checkpoint_dir`` if there is one."""
    parent_pid: int | None = None
    cache_dir: Path | None = None
    eval_file: Path | None = None
    precision: str = "auto"
    """``auto``, ``fp32`` or ``bf16``: the frozen base's dtype (``trainingd.train.model.choose_precision``)."""
    stop_signal: StopSignal = field(default_factory=StopSignal)
    skip_if_trained: bool = False
    """Daemon mode: a job already listed in the init adapter's state (same id and data) is not trained again."""
    home: Path | None = None
    """Daemon mode: the home (its held-out set, and where the gate keeps a rejected candidate); None: no gate."""
