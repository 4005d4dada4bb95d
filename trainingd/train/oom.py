"""Out-of-memory recovery: halve the examples per forward pass and redo the step, and remember what fitted.

The recipe's ``_step`` catches ``torch.OutOfMemoryError``, calls :func:`halve` and redoes the step from the same
weights and RNG state (same loss, same data order). At one example per forward pass the example cannot be trained
on this device (:class:`OutOfMemory`, a data error). Sharded (FSDP) the group ends instead and the daemon's retry
resumes from the last checkpoint with the halved size from :data:`MICRO_BATCH_FILE`, which
:func:`start_micro_batch` reads.

Fault injection for tests: ``TRAININGD_OOM_AT`` (see :func:`oom_points`).
"""

from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from trainingd.config import Config

log = logging.getLogger(__name__)

OOM_ENV = "TRAININGD_OOM_AT"
UNSPLIT = 1 << 30  # examples per forward pass when nothing limits them
MICRO_BATCH_FILE = "micro_batch.json"


class OutOfMemory(Exception):
    """An out-of-memory error at one example per forward pass: the example cannot be trained on this device."""


def oom_points() -> Callable[[int, int], None]:
    """Fault injection for tests: ``TRAININGD_OOM_AT=step:N`` raises ``torch.OutOfMemoryError`` in the last
    forward of optimizer step N (once); ``step:N:always`` at every try of step N (the example cannot fit);
    ``step:N:above:K`` at every try of step N with more than K examples per forward pass (a device that holds K,
    across retries by new processes). Unset, this is a no-op."""
    raw = os.environ.get(OOM_ENV, "")
    if not raw:
        return lambda step, micro: None
    parts = raw.split(":")
    target, always, fired = int(parts[1]), len(parts) > 2 and parts[2] == "always", {"n": 0}
    above = int(parts[3]) if len(parts) > 3 and parts[2] == "above" else None

    def oom(step: int, micro: int) -> None:
        if above is not None:
            fire = step == target and micro > above
        else:
            fire = step == target and (always or not fired["n"])
        if fire:
            import torch

            fired["n"] += 1
            log.warning("injected out-of-memory error at step %d", step)
            raise torch.OutOfMemoryError(f"injected by {OOM_ENV}={raw}")

    return oom


oom_point = oom_points()


def start_micro_batch(cfg: Config, checkpoint_dir: Path) -> int:
    """Examples per forward pass: the config's, or what an out-of-memory error of an earlier try left."""
    # A packed row is one forward however many examples it holds (its tokens are bounded by max_length).
    micro = cfg.micro_batch_size or (UNSPLIT if cfg.packing else cfg.batch_size)
    try:
        saved = json.loads((Path(checkpoint_dir) / MICRO_BATCH_FILE).read_text())
        micro = min(micro, int(saved["micro_batch_size"]))
        log.info("micro-batch %d examples per forward pass (after an out-of-memory error)", micro)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return micro


def record_micro_batch(checkpoint_dir: Path, micro: int) -> None:
    """A retry of this job (after a crash) starts with the micro-batch that fitted."""
    from trainingd.atomic_ops import atomic_write_text

    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / MICRO_BATCH_FILE, json.dumps({"micro_batch_size": micro}) + "\n")


def halve(error: Exception, pieces: list[list[int]], *, micro: int, lengths: list[int], step: int, fsdp: bool,
          optimizer: Any, checkpoint_dir: Path, describe: Callable[[int], str], device: Any) -> int:
    """The examples per forward pass for the redo of step ``step + 1`` after ``error``; raises when there is none.

    ``describe(i)`` names example ``i`` of the prepared file for the message of an example that cannot fit.
    """
    import torch

    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    biggest = max(pieces, key=lambda p: (len(p), max((lengths[i] for i in p), default=0)))
    if fsdp and micro > 1 and len(biggest) > 1:
        # The other ranks may be inside a weight gather this rank left: a redo here could pair the wrong
        # collectives. The group ends and the daemon's retry resumes from the last checkpoint, halved.
        micro = max(1, min(micro, len(biggest)) // 2)
        record_micro_batch(checkpoint_dir, micro)
        raise RuntimeError(f"out of memory at step {step + 1} with sharded weights: the retry resumes from the "
                           f"last checkpoint with {micro} examples per forward pass ({error})")
    if micro <= 1 or len(biggest) <= 1:
        what = "" if not biggest else describe(biggest[0])
        raise OutOfMemory(f"out of memory at step {step + 1} with one example per forward pass: {what} does not "
                          f"fit on {device}; lower max_length, enable gradient_checkpointing or use_qlora, or "
                          f"remove that example ({error})")
    return max(1, min(micro, len(biggest)) // 2)
