"""Third-party messages that are not about the run, silenced narrowly in the trainer's processes.

    from trainingd.train.noise import quiet_third_party
    quiet_third_party()          # first thing in a trainer process, before transformers/peft/bitsandbytes load

What a trainer's log says should be about the run; each entry here names a message a user cannot act on and
why it appears. Everything else (a user's config, data, memory, a library's real error) still reaches the log.
Fixed at the cause instead: a trainer process without QLoRA never loads bitsandbytes (``without_bitsandbytes``;
``checkpoint.versions`` reads the installed version without importing it).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# peft's PeftModel.__init__ reads ``model.is_gradient_checkpointing``, which transformers 5.2x deprecated with a
# FutureWarning: printed on every adapter load, about peft's code, nothing to change in a config.
PEFT_DEPRECATED_PROPERTY = r"`is_gradient_checkpointing` is deprecated"

# bitsandbytes, on CPUs with avx512_bf16, asks the Hugging Face Hub for an optional faster 4-bit CPU kernel when
# it is imported; offline (HF_HUB_OFFLINE, the trainer's default) the fetch fails, it logs this warning and
# uses its built-in kernel, which is what the run uses anyway.
BNB_KERNEL_HUB = "Failed to load CPU gemm_4bit_forward from kernels-community"
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


class _OfflineKernelHub(logging.Filter):
    """Drops bitsandbytes' kernel-hub warning when the hub is offline on purpose; keeps it otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        return not (offline and str(record.msg).startswith(BNB_KERNEL_HUB))


def quiet_third_party() -> None:
    """Install the filters above; progress bars go too when stderr is a log file, not a terminal."""
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATED_PROPERTY, category=FutureWarning)
    cpu_ops = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _OfflineKernelHub) for f in cpu_ops.filters):
        cpu_ops.addFilter(_OfflineKernelHub())
    if not sys.stderr.isatty():
        # "Loading weights: 0%|...|" redrawn with carriage returns: one unreadable line per load in a log file
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def without_bitsandbytes() -> None:
    """Make ``import bitsandbytes`` fail in this process (a trainer whose run has ``use_qlora: false``).

    peft 0.2x imports bitsandbytes whenever it is installed (``peft/helpers.py``), and that import is what logs
    the kernel-hub message above; a full-precision run needs nothing from it. A ``None`` entry in
    ``sys.modules`` makes the import raise ImportError, which peft and transformers take as "not installed"
    (their ``find_spec`` checks answer None too). Call it before peft is imported; once loaded, it stays.
    """
    sys.modules.setdefault("bitsandbytes", None)  # type: ignore[arg-type]
