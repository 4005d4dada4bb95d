"""Control at optimizer-step boundaries: pause, stop (with a checkpoint) and skip, agreed by every rank.

A mixin of :class:`trainingd.train.recipe.Recipe`: the loop calls ``_obey()`` before every optimizer step and once
after the last; ``_check_stop_before_load()`` runs before the model is loaded. The requests come from the daemon's
trainer command (``RunSpec.commands``), SIGTERM/SIGINT (``RunSpec.stop_signal``), the death of the parent process and
a disk too full for the next checkpoint. Leaving early raises :class:`RunExit`, which ``recipe.run`` turns into the
run's result.
"""

from __future__ import annotations

import logging
import shutil
import time

from trainingd import exit_codes
from trainingd.train import checkpoint as ckpt
from trainingd.train import distributed as dist_

log = logging.getLogger("trainingd.train.recipe")  # one logger for the recipe and its mixins

PAUSE_POLL_S = 0.2


class RunExit(Exception):
    """Leave the loop with an exit code (stop, skip) after the recipe has cleaned up."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Control:
    """The recipe's control methods (they use its ``spec``, ``cfg``, ``group``, ``state`` and ``progress``)."""

    def _check_stop_before_load(self) -> None:
        action = self._action()
        if action in ("stop", "skip"):
            # Nothing trained in this process yet: an existing checkpoint is still the place to resume.
            if action == "skip" and self.is_main:
                ckpt.remove_checkpoints(self.spec.checkpoint_dir)
            raise RunExit(exit_codes.STOPPED if action == "stop" else exit_codes.SKIPPED, f"{action} requested")

    def _action(self) -> str:
        """What every rank does now: each rank's own view, agreed across the group (a collective: every rank
        calls it at the same points)."""
        return self.group.agree(self._local_action())

    def _local_action(self) -> str:
        spec = self.spec
        if spec.stop_signal.requested:
            return "stop"
        if not dist_.parent_alive(spec.parent_pid):
            log.warning("parent process %d is gone: stopping", spec.parent_pid)
            return "stop"
        if spec.commands is not None and self.is_main:
            try:
                action = spec.commands()
            except (OSError, ValueError) as e:  # a torn or missing command file must not kill training
                log.warning("could not read the trainer command: %s", e)
                action = "run"
            if action != "run":
                return action
        if self.is_main and self._low_disk() is not None:
            return "pause"  # the next checkpoint could not be written: wait for space, keep the steps in memory
        return "run"

    def _low_disk(self) -> str | None:
        """Why training waits for disk space (free space under ``min_free_disk_gb``), or None."""
        if not self.cfg.min_free_disk_gb:
            return None
        folder = self.spec.checkpoint_dir
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            free_gb = shutil.disk_usage(folder).free / 2**30
        except OSError:
            return None
        if free_gb >= self.cfg.min_free_disk_gb:
            return None
        return (f"low disk: {free_gb:.2f} GB free under {folder}, under min_free_disk_gb "
                f"{self.cfg.min_free_disk_gb:g}; paused at step {self.state.step} until space is freed "
                "(trainingd clean --dry-run lists what can go)")

    def _obey(self) -> None:
        """At a step boundary: pause while asked, checkpoint and leave on stop, leave on skip."""
        action = self._action()
        if action == "pause":
            why = (self._low_disk() if self.is_main else None) or f"paused at step {self.state.step}"
            self.progress.set_status("paused", why)
            if why.startswith("low disk"):
                log.warning("%s", why)
            paused_at = time.time()
            while action == "pause":
                time.sleep(PAUSE_POLL_S)
                action = self._action()
            self.paused_s += time.time() - paused_at  # not training time: keeps tokens/s and the ETA honest
            self.progress.set_status("training", f"resumed at step {self.state.step}")
        if action == "stop":
            self.progress.set_status("stopping", f"checkpointing at step {self.state.step}")
            self.save_checkpoint()
            raise RunExit(exit_codes.STOPPED, f"stopped at step {self.state.step} of {self.total_steps}; "
                                              "checkpoint written")
        if action == "skip":
            self.progress.set_status("stopping", "skip requested: discarding this job's checkpoints")
            if self.is_main:
                ckpt.remove_checkpoints(self.spec.checkpoint_dir)
            raise RunExit(exit_codes.SKIPPED, f"skipped at step {self.state.step}; adapter changes discarded")
