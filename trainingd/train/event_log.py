"""TensorBoard event files of a training run, when ``"tensorboard": true`` (optional extra ``tensorboard``).

The trainer writes the scalars it also puts in ``status/metrics.jsonl`` (loss, learning rate, gradient norm,
tokens/s, eval loss) and, at every layer report, each LoRA module's update, change and gradient norm, through
``torch.utils.tensorboard.SummaryWriter`` into one run folder per job under ``logs/tensorboard/`` (standalone:
``<output-dir>/tensorboard/``). Watch them with ``tensorboard --logdir logs/tensorboard``. Without the package
installed, training goes on and a warning says how to get it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FLUSH_S = 10
LAYER_COLUMNS = ("update_norm", "delta_norm", "grad_norm")


class EventLog:
    """A ``SummaryWriter`` that never stops training: a missing package or a write error only logs a warning."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("\"tensorboard\": true, but the tensorboard package is missing: pip install "
                        "'trainingd[tensorboard]' (training goes on without event files)")
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.folder), flush_secs=FLUSH_S)
        log.info("TensorBoard events in %s", self.folder)

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "train/") -> None:
        """One scalar per known (non-null) value at ``step``."""
        if self.writer is None:
            return
        for name, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._add(prefix + name, value, step)

    def layers(self, doc: dict) -> None:
        """Each module's norms from a layer-activity document, as ``update_norm/<module path>`` and so on."""
        if self.writer is None:
            return
        for row in doc.get("modules") or []:
            for col in LAYER_COLUMNS:
                if row.get(col) is not None:
                    self._add(f"{col}/{row['name']}", row[col], doc["step"])

    def _add(self, tag: str, value: float, step: int) -> None:
        try:
            self.writer.add_scalar(tag, float(value), global_step=step)
        except (OSError, ValueError) as e:
            log.warning("could not write the TensorBoard event %s: %s", tag, e)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
