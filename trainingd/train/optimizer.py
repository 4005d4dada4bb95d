"""The optimizer side of the recipe: AdamW over the LoRA weights, the LR schedules and one optimizer step.

A mixin of :class:`trainingd.train.recipe.Recipe` (it reads and sets the recipe's attributes), plus
:func:`lr_lambda`, the per-file schedules (warmup, then constant, linear or cosine over the job's steps). The
``stream`` schedule and the AdamW state carried from one job to the next are ``trainingd.train.stream``.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from trainingd.config import Config
from trainingd.train import distributed as dist_
from trainingd.train import stream

log = logging.getLogger("trainingd.train.recipe")  # one logger for the recipe and its mixins


def lr_lambda(cfg: Config, total_steps: int) -> Callable[[int], float]:
    warmup = int(math.ceil(cfg.warmup_ratio * total_steps))

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if cfg.lr_scheduler == "constant":
            return 1.0
        span = max(1, total_steps - warmup)
        frac = min(1.0, (step - warmup) / span)
        if cfg.lr_scheduler == "linear":
            return max(0.0, 1.0 - frac)
        return 0.5 * (1.0 + math.cos(math.pi * frac))

    return f


class Optimization:
    """The recipe's optimizer methods: ``_setup_optimizer`` and ``_carry_optimizer`` during setup,
    ``_apply_step`` once per optimizer step."""

    def _setup_optimizer(self) -> None:
        """Wrap the loss module (DDP through accelerate, or FSDP2 shards) and build AdamW over the LoRA weights."""
        import torch

        cfg = self.cfg
        if self.fsdp:
            blocks = set(getattr(self.model.get_base_model(), "_no_split_modules", None) or [])
            full = self.loss_module.state_dict() if self.is_main else {}
            self.wrapped = self.group.fully_shard(self.loss_module, blocks)
            self.group.fill_from_main(self.wrapped, full)
            del full
            self.params = [p for p in self.wrapped.parameters() if p.requires_grad]  # sharded (DTensor)
            self.optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        else:
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(self.params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
            self.wrapped, self.optimizer = self.accelerator.prepare(self.loss_module, optimizer)

    def _make_scheduler(self):
        """The LR scheduler over ``self.total_steps`` (after ``_carry_optimizer``: "stream" continues its count)."""
        import torch

        cfg = self.cfg
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, stream.lr_lambda(cfg.stream_warmup_steps, self.carried_steps)
            if cfg.lr_schedule == "stream" else lr_lambda(cfg, self.total_steps))

    def _carry_optimizer(self) -> int:
        """The "stream" policy: load the AdamW state the last job left beside the adapter (not on a resume: the
        checkpoint has its own). Returns the optimizer steps it carries (0: fresh, or the per-file policy)."""
        if self.cfg.lr_schedule != "stream":
            return 0
        carried = stream.read_carried(self.spec.init_adapter, self.prev_state)
        strategy = "fsdp" if self.fsdp else "ddp"
        if carried is not None and (carried.get("strategy"), carried.get("world_size")) != (strategy,
                                                                                              self.group.world):
            log.info("stream: the carried optimizer was made with %s x%s, this run is %s x%d: a fresh one",
                     carried.get("strategy"), carried.get("world_size"), strategy, self.group.world)
            carried = None
        if carried is None:
            return 0
        if self.resume_from is None:
            import torch

            if self.fsdp:
                whole = torch.load(carried["path"], map_location="cpu", weights_only=True) if self.is_main else None
                dist_.load_full_optimizer_state(self.wrapped, self.optimizer, whole)
            else:
                where = "cpu" if self.device.type == "cpu" else self.device
                try:
                    self.optimizer.load_state_dict(torch.load(carried["path"], map_location=where,
                                                              weights_only=True))
                except (OSError, RuntimeError, ValueError, KeyError) as e:  # torn or of another shape: start afresh
                    log.warning("stream: cannot load %s (%s): a fresh optimizer", carried["path"], e)
                    return 0
            stream.reset_groups(self.optimizer, self.cfg.learning_rate, self.cfg.weight_decay)
            log.info("stream: carried the optimizer state of %d steps from %s", carried["optimizer_steps"],
                     carried["path"])
        return int(carried["optimizer_steps"])

    def _apply_step(self) -> tuple[float, float]:
        """Clip (or measure) the accumulated gradients, step the optimizer and the schedule, clear the gradients.
        Returns (gradient norm, the learning rate the step used)."""
        import torch

        cfg = self.cfg
        if cfg.max_grad_norm > 0:
            grad_norm = float(self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm))
        elif self.fsdp:  # sharded gradients: torch's norm of DTensors (clipping at infinity changes nothing)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, float("inf")))
        else:
            grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in self.params
                                                      if p.grad is not None])))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm, lr
