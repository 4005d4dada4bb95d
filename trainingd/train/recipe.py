"""The training recipe: setup, train, save_checkpoint, cleanup -- one explicit loop, one function.

Both entry points build a :class:`RunSpec` with explicit paths and call :func:`execute`:

* daemon mode: ``python -m trainingd.train --home H --job-id ID --dataset PATH --reason-file PATH``
  (see ``trainingd/train/__main__.py``);
* standalone: ``python3 train.py --dataset FILE --model PATH --output-dir DIR --epochs N``.

What the loop guarantees:

* the loss of an optimizer step is the summed token cross-entropy over the trained tokens of all its
  micro-batches divided by their total count, so ``k`` micro-batches of ``b`` equal one batch of
  ``k*b`` exactly; logits are computed only at trained positions (saves the lm_head on prompts/padding);
* data order comes from ``plan_batches(seed, epoch)`` and every RNG state is checkpointed, so a run
  stopped at step k and resumed ends with the same adapter as an uninterrupted one;
* control (pause/run/stop/skip, ``.stop``, SIGTERM/SIGINT, parent death) is honoured at every
  optimizer-step boundary; a stop always leaves a complete checkpoint;
* one code path for 1 CPU, 1 GPU and N processes: the loss runs inside the forward of a ``TokenLoss`` module
  that ``accelerate`` prepares (DDP) or FSDP2 shards (``distributed.strategy: fsdp``), under DDP micro-batches but
  the last of a step run under ``no_sync``, every rank trains its shard of each global micro-batch and all ranks
  agree on control at the same step (``distributed.py``);
* an out-of-memory error halves the examples per forward pass and redoes the step (same loss, same data order);
  with sharded weights the group ends instead and the daemon's retry resumes from the last checkpoint, halved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import random
import shutil
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from trainingd import exit_codes
from trainingd.atomic_ops import json_safe
from trainingd.config import Config
from trainingd.contracts import adapter_state
from trainingd.contracts.layer_activity import summary as layer_summary
from trainingd.contracts.manifest import read_manifest
from trainingd.contracts.result import RunResult, write_result
from trainingd.faults import fault_point
from trainingd.train import checkpoint as ckpt
from trainingd.train import distributed as dist_
from trainingd.train import stream
from trainingd.train.oom import UNSPLIT, OutOfMemory, halve, oom_point, record_micro_batch, start_micro_batch
from trainingd.train.run_state import RunState
from trainingd.train.spec import RunSpec, StopSignal
from trainingd.train.progress import Progress

__all__ = ["Recipe", "RunSpec", "StopSignal", "execute", "run"]  # RunSpec and StopSignal live in spec.py

log = logging.getLogger(__name__)

PAUSE_POLL_S = 0.2
EMA_BETA = 0.9


# Fault injection (TRAININGD_CRASH_AT / TRAININGD_FAIL_AT): the points are listed in trainingd.faults.
crash_point = fault_point

class _Exit(Exception):
    """Leave the loop with an exit code (stop, skip) after the recipe has cleaned up."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _lr_lambda(cfg: Config, total_steps: int) -> Callable[[int], float]:
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


def forward_chunks(rows: list[int], lengths: list[int], micro: int, max_tokens: int | None) -> list[list[int]]:
    """Cut one rank's micro-batch into forward passes of at most ``micro`` rows and ``max_tokens`` padded tokens.

    Rows are kept in order; the summed loss over the pieces equals the loss of the whole (only rounding differs).
    """
    out: list[list[int]] = []
    cur: list[int] = []
    width = 0
    for i in rows:
        w = max(width, lengths[i])
        if cur and (len(cur) >= micro or (max_tokens is not None and w * (len(cur) + 1) > max_tokens)):
            out.append(cur)
            cur, w = [], lengths[i]
        cur.append(i)
        width = w
    if cur:
        out.append(cur)
    return out


class Recipe:
    """One run: ``setup()`` then ``train()``; ``save_checkpoint()`` whenever needed; ``cleanup()``."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.cfg = spec.cfg
        if self.cfg.max_length is None:
            # Resolved here, before anything reads it: the data cache key, the batch plans and the locked values
            # recorded in checkpoints and the adapter all see the number, never "from the model".
            from trainingd.models.base_model import default_max_length

            self.cfg = dataclasses.replace(self.cfg, max_length=default_max_length(spec.base_model))
            log.info("max_length %d (from the model's context length, capped)", self.cfg.max_length)
        # Only the main process writes progress and metrics; the others run with a silent Progress.
        self.is_main = dist_.env_rank() == 0
        self.progress = Progress(spec.progress_path if self.is_main else None,
                                 spec.metrics_path if self.is_main else None, spec.job_id)
        self.state = RunState()
        self.last_saved_step: int | None = None
        self.notice: str | None = None
        self.t_start = time.time()
        self.paused_s = 0.0
        self.events = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> RunResult | None:
        """Check the data, adapter and checkpoints; prepare data; load the model. A result ends the run early."""
        self.progress.start_heartbeat()
        self.progress.set_status("loading", "checking data, base model and checkpoints")
        self._setup_group()
        self._setup_identity()
        early = self._setup_resume()
        if early is not None:
            return early
        early = self._setup_data()
        if early is not None:
            return early
        self._check_stop_before_load()
        self._setup_model()
        self._setup_optimizer()
        self._setup_schedule()
        self._setup_observers()
        self.progress.update(total_steps=self.total_steps, epoch=self.state.epoch, step=self.state.step,
                             progress=self.state.step / max(1, self.total_steps), **self._sizes())
        return None

    def _setup_group(self) -> None:
        """The Accelerator and the process group (with several processes this joins it: every later agreement
        needs it)."""
        import accelerate
        import torch

        fsdp = dist_.wants_fsdp(self.cfg.distributed.strategy)  # before the Accelerator reads the launcher's settings
        # mixed_precision "no": the recipe's own autocast (``precision``) is the one authority on dtypes;
        # device_placement False: the model is placed by load_model (4-bit weights must not be moved).
        self.accelerator = accelerate.Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no",
                                                  device_placement=False)
        self.group = dist_.Group(self.accelerator)
        self.is_main = self.group.is_main
        self.fsdp = fsdp and self.group.world > 1
        if self.fsdp and self.cfg.use_qlora:
            # Only an accelerate config file gets here (the config check refuses fsdp with use_qlora).
            log.warning("FSDP does not shard 4-bit (use_qlora) weights: training with DDP instead")
            self.fsdp = False

    def _setup_identity(self) -> None:
        """What this run's checkpoints must match (``self.expected``); the adapter we continue must have been made
        with the same base and locked settings."""
        from trainingd.train import data

        spec, cfg = self.spec, self.cfg
        self.data_sha256 = data.file_sha256(spec.dataset)
        self.base_hash = ckpt.base_model_hash(spec.base_model)
        self.prev_state = None
        if spec.init_adapter is not None:
            self.prev_state = adapter_state.read_adapter_state(spec.init_adapter)
        self.expected = {"job_id": spec.job_id, "data_sha256": self.data_sha256,
                         "base_model": str(Path(spec.base_model).resolve()), "base_model_hash": self.base_hash,
                         "locked": cfg.locked_values(),
                         # The adapter this job starts from is part of its checkpoints' identity.
                         "adapter_generation": adapter_state.generation_id(self.prev_state)}
        if self.prev_state:
            try:
                ckpt.check_manifest(self.prev_state, {k: v for k, v in self.expected.items()
                                                      if k in ("base_model_hash", "locked")})
            except ckpt.CheckpointMismatch as e:
                raise ckpt.AdapterMismatch(f"the adapter in {spec.init_adapter} was made with other settings "
                                           f"(change them back, or move it away and start a fresh adapter): {e}"
                                           ) from None

    def _setup_resume(self) -> RunResult | None:
        """Pick the checkpoint to resume (``self.resume_from``, or None); a job already trained ends the run."""
        spec = self.spec
        if spec.skip_if_trained and any((t.get("job_id"), t.get("sha256")) == (spec.job_id, self.data_sha256)
                                        for t in adapter_state.trained_entries(self.prev_state)):
            # Published before a crash that came before the daemon moved the job: never train twice.
            log.info("job %s is already trained into %s", spec.job_id, spec.init_adapter)
            if self.is_main:
                ckpt.remove_checkpoints(spec.checkpoint_dir)
            return RunResult(exit_codes.OK, summary={"already_trained": True, "steps": 0})

        resume_from = ckpt.latest_complete(spec.checkpoint_dir) if spec.resume else None
        if resume_from is not None:
            manifest = read_manifest(resume_from)
            if manifest.get("adapter_generation") != self.expected["adapter_generation"]:
                # Another job published since this checkpoint was made: resuming would overwrite its training.
                self.notice = (f"checkpoint {resume_from.name} was made on another adapter (generation "
                               f"{manifest.get('adapter_generation')}, now {self.expected['adapter_generation']}): "
                               "retraining it on the current adapter")
                log.warning("job %s: %s", spec.job_id, self.notice)
                self.progress.update(notice=self.notice)
                if self.is_main:
                    ckpt.remove_checkpoints(spec.checkpoint_dir)
                resume_from = None
            else:
                try:
                    ckpt.check_manifest(manifest, self.expected)
                except ckpt.CheckpointMismatch as e:
                    raise ckpt.CheckpointMismatch(f"checkpoint {resume_from} does not match this run: {e}") from None
        self.resume_from = resume_from
        self.group.barrier()  # no rank looks at checkpoints the main process is still removing
        return None

    def _setup_data(self) -> RunResult | None:
        """Load the tokenizer and tokenize the file (``self.prepared``); unusable data ends the run."""
        from trainingd.train import data
        from trainingd.train.model import load_tokenizer

        spec = self.spec
        self.tokenizer = load_tokenizer(spec.base_model)
        self.progress.set_status("preparing", f"tokenizing {Path(spec.dataset).name}")
        cache_dir = spec.cache_dir or (Path(spec.output_dir) / ".cache")
        # The main process tokenizes into the cache; the others then read it (never two writers of one cache).
        error: data.DataError | None = None
        for turn in ("main", "others"):
            if (turn == "main") == self.is_main:
                try:
                    self.prepared = data.prepare_dataset(spec.dataset, self.tokenizer, self.cfg, cache_dir,
                                                         eval_file=spec.eval_file, progress=self._on_prepare,
                                                         sha256=self.data_sha256)
                except data.DataError as e:
                    error = e
            if turn == "main" and self.group.gather(error is None)[0] is False:
                if error is None:  # only the main process reports the file's problems
                    return RunResult(exit_codes.DATA_ERROR, reason="the main process found the data unusable")
                break
        if error is not None and not self.is_main:
            raise RuntimeError(f"rank {self.group.rank} could not read the data the main process prepared: {error}")
        if error is not None:
            return RunResult(exit_codes.DATA_ERROR, reason=str(error),
                             details=list(getattr(error, "details", []) or []))
        self.progress.update(prepare=None, data=json_safe(self.prepared.report))
        return None

    def _setup_model(self) -> None:
        """Load the base with its adapter (the checkpoint's when resuming) and the loss module around it."""
        from trainingd.train.model import TokenLoss, choose_precision, load_model, set_determinism, set_threads

        spec, cfg = self.spec, self.cfg
        set_threads()
        self.device = self.accelerator.device
        set_determinism(self.device)
        self.precision = self._choose_precision(choose_precision(spec.precision, self.device, spec.cache_dir))
        self.progress.update(write=False, precision=self.precision)
        self.progress.set_status("loading", f"loading {Path(spec.base_model).name} ({self.precision}"
                                            f"{', 4-bit' if cfg.use_qlora else ''})")
        init = self.resume_from if self.resume_from is not None else spec.init_adapter
        # Sharded, only the main process reads the weights; the others build the model on the meta device and
        # receive their shards from it (host memory holds one copy of the base, not one per process).
        self.model = load_model(spec.base_model, cfg, init_adapter=init, device=self.device, precision=self.precision,
                                place=not self.fsdp, skeleton=self.fsdp and not self.is_main)
        self.model.train()
        # What accelerate wraps (DDP with several processes; itself with one) or FSDP shards: the loss module, so
        # the lm_head-only-where-trained forward is the wrapper's forward and its gradients are reduced.
        self.loss_module = TokenLoss(self.model, self._autocast)
        self.parts = self.loss_module._parts

    def _choose_precision(self, chosen: str) -> str:
        """The precision to train in: every rank takes the main process's choice, and a resume keeps the
        checkpoint's (a resume is exact only within one precision). Under ``auto`` the checkpoint's precision wins;
        an explicit other precision retrains the job from its start, with the reason as the job's notice."""
        spec = self.spec
        chosen = self.group.gather(chosen)[0]
        if self.resume_from is None:
            return chosen
        made = read_manifest(self.resume_from).get("precision")
        if made not in ("fp32", "bf16") or made == chosen:
            return chosen
        if spec.precision == "auto":
            log.info("job %s: resuming in %s, the precision checkpoint %s was trained in (auto would pick %s)",
                     spec.job_id, made, self.resume_from.name, chosen)
            return made
        self.notice = (f"checkpoint {self.resume_from.name} was trained in {made} and this run trains in {chosen}: "
                       "retraining the job from its start (a resume is exact only within one precision)")
        log.warning("job %s: %s", spec.job_id, self.notice)
        self.progress.update(notice=self.notice)
        if self.is_main:
            ckpt.remove_checkpoints(spec.checkpoint_dir)
        self.resume_from = None
        self.group.barrier()
        return chosen

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

    def _setup_schedule(self) -> None:
        """The batch plans, the step count and the LR schedule; then the checkpoint's state, or a seeded start."""
        import numpy as np
        import torch

        cfg = self.cfg
        self.lengths = list(self.prepared.train["length"])
        self.plans = [self._global_plan(e) for e in range(cfg.epochs)]
        self.micro = self._start_micro_batch()
        k = cfg.gradient_accumulation
        self.total_steps = sum(math.ceil(len(p) / k) for p in self.plans)
        self.carried_steps = self._carry_optimizer()  # before the scheduler reads the rates
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, stream.lr_lambda(cfg.stream_warmup_steps, self.carried_steps)
            if cfg.lr_schedule == "stream" else _lr_lambda(cfg, self.total_steps))
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        else:
            random.seed(cfg.seed)
            np.random.seed(cfg.seed % 2**32)

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

    def _setup_observers(self) -> None:
        """TensorBoard events and the per-LoRA-module report, where the config asks for them."""
        cfg, spec = self.cfg, self.spec
        if cfg.tensorboard and spec.tensorboard_dir is not None and self.accelerator.is_main_process:
            from trainingd.train.event_log import EventLog

            self.events = EventLog(spec.tensorboard_dir)
        self.layer_stats = None
        if cfg.layer_stats_steps and (self.is_main or self.fsdp):  # sharded factors are gathered by every rank
            from trainingd.train.layer_stats import LayerStats

            # Changes are measured from the adapter as this process starts (the checkpoint's, after a resume).
            self.layer_stats = LayerStats(self.accelerator.unwrap_model(self.model),
                                          spec.layer_activity_path if self.is_main else None,
                                          spec.job_id, start_step=self.state.step)

    def _global_plan(self, epoch: int) -> list[list[list[int]]]:
        """One epoch's global micro-batches, each as the rows of every rank (``[rank][row]``).

        Unpacked: ``plan_batches`` with ``batch_size x world`` examples, each cut into contiguous per-rank slices
        (the same examples in the same steps as one process with that batch size). Packed: ``world`` packed rows
        per global micro-batch, one per rank.
        """
        from trainingd.train import data

        cfg, world = self.cfg, self.group.world
        size = cfg.batch_size if cfg.packing else cfg.batch_size * world
        plan = data.plan_batches(self.lengths, size, seed=cfg.seed, epoch=epoch, packing=cfg.packing,
                                 max_length=cfg.max_length)
        if cfg.packing:
            return [[plan[i + r] if i + r < len(plan) else [] for r in range(world)]
                    for i in range(0, len(plan), world)]
        return [[dist_.shard(mb, r, world) for r in range(world)] for mb in plan]

    def _start_micro_batch(self) -> int:
        micro = start_micro_batch(self.cfg, self.spec.checkpoint_dir)
        return self.group.max(micro) if self.group.world > 1 else micro  # every rank the same

    def _sizes(self) -> dict:
        """The batch sizes in status: per forward pass, forwards per optimizer step, examples per step."""
        cfg = self.cfg
        per_mb = 1 if self.micro >= UNSPLIT else math.ceil(cfg.batch_size / self.micro)
        return {"micro_batch_size": None if self.micro >= UNSPLIT else min(self.micro, cfg.batch_size),
                "gradient_accumulation": cfg.gradient_accumulation * per_mb,
                "num_processes": self.group.world,
                "effective_batch_size": cfg.batch_size * cfg.gradient_accumulation * self.group.world}

    def _on_prepare(self, *args: Any, **kwargs: Any) -> None:
        """Progress callback of prepare_dataset: ``(phase, lines_done, lines_total)`` or a dict."""
        if args and isinstance(args[0], dict):
            kwargs = {**args[0], **kwargs}
            args = ()
        names = ("phase", "lines_done", "lines_total")
        info = dict(zip(names, args))
        info.update({k: v for k, v in kwargs.items() if k in names})
        self.progress.update(write=False, prepare={n: info.get(n) for n in names})

    def _check_stop_before_load(self) -> None:
        action = self._action()
        if action in ("stop", "skip"):
            # Nothing trained in this process yet: an existing checkpoint is still the place to resume.
            if action == "skip" and self.is_main:
                ckpt.remove_checkpoints(self.spec.checkpoint_dir)
            raise _Exit(exit_codes.STOPPED if action == "stop" else exit_codes.SKIPPED, f"{action} requested")

    # --------------------------------------------------------------- control
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
            raise _Exit(exit_codes.STOPPED, f"stopped at step {self.state.step} of {self.total_steps}; "
                                            "checkpoint written")
        if action == "skip":
            self.progress.set_status("stopping", "skip requested: discarding this job's checkpoints")
            if self.is_main:
                ckpt.remove_checkpoints(self.spec.checkpoint_dir)
            raise _Exit(exit_codes.SKIPPED, f"skipped at step {self.state.step}; adapter changes discarded")

    # ----------------------------------------------------------------- train
    def _rows(self, indices: list[int]) -> list[dict]:
        cols = self.prepared.train[list(indices)]
        keys = list(cols)
        return [{k: cols[k][i] for k in keys} for i in range(len(indices))]

    def _batch(self, rows: list[dict]) -> dict:
        from trainingd.train import data

        batch = data.collate(rows, self.tokenizer.pad_token_id, packing=self.cfg.packing)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _step(self, group: list[list[list[int]]]) -> tuple[float, int]:
        """Forward and backward this rank's share of one optimizer step; returns (step loss, trained tokens),
        both over every rank.

        Each forward contributes its summed token loss divided by the trained tokens of the whole step on all
        ranks, times the world size (DDP averages gradients), so the gradient is that of one batch holding every
        example. All forwards but the last run under ``no_sync``: one all-reduce per step. An out-of-memory error
        halves the examples per forward and redoes the step from the same weights and RNG state.

        Sharded (FSDP), every rank runs as many forwards as the rank with the most (FSDP gathers weights in each)
        and each backward reduces its gradients at once: keeping unsharded gradients across forwards would cost
        the memory sharding saves.
        """
        import torch

        from trainingd.train import data

        rank, world = self.group.rank, self.group.world
        mine = [mb[rank] for mb in group]
        rows = {i: r for i, r in zip([i for m in mine for i in m], self._rows([i for m in mine for i in m]))}
        # Per row as num_trained_tokens counts them (labels[1:]; a packed example's first label is never trained).
        n_local = sum(1 for m in mine for i in m for label in rows[i]["labels"][1:] if label != data.IGNORE)
        n_trained = int(self.group.sum([n_local])[0]) if world > 1 else n_local
        denom = max(1, n_trained)
        rng = torch.get_rng_state()
        while True:
            budget = None if self.cfg.packing else self.cfg.micro_batch_tokens  # a packed row is its own budget
            pieces = [p for m in mine for p in forward_chunks(m, self.lengths, self.micro, budget)]
            if not pieces:
                pieces = [[]]  # nothing of this step on this rank: still join the all-reduce
            if self.fsdp:
                pieces += [[]] * (self.group.max(len(pieces)) - len(pieces))
            try:
                local = 0.0
                for n, piece in enumerate(pieces):
                    if n == len(pieces) - 1:  # injected after the others' gradients: a redo must clear them
                        oom_point(self.state.step + 1, max(len(p) for p in pieces))
                    batch = self._batch([rows[i] for i in piece]) if piece else self._empty_batch(group)
                    sync = self.fsdp or n == len(pieces) - 1
                    with (contextlib.nullcontext() if sync else self.accelerator.no_sync(self.wrapped)):
                        loss = self.wrapped(**batch) / denom
                        if world > 1:
                            loss = loss * world
                        self.accelerator.backward(loss)
                    local += float(loss.detach()) / world
                break
            except torch.OutOfMemoryError as e:
                self._on_oom(e, pieces)
                torch.set_rng_state(rng)
        step_loss = self.group.sum([local])[0] if world > 1 else local
        return step_loss, n_trained

    def _empty_batch(self, group: list[list[list[int]]]) -> dict:
        """One real row with no trained token: zero loss and gradient, but a full forward and backward."""
        first = next(i for mb in group for rows in mb for i in rows)
        row = dict(self._rows([first])[0])
        row["labels"] = [-100] * len(row["labels"])
        return self._batch([row])

    def _on_oom(self, error: Exception, pieces: list[list[int]]) -> None:
        """Halve the examples per forward pass (the step is then redone), or give up (see ``oom.halve``)."""
        def describe(i: int) -> str:
            start = self.tokenizer.decode(self._rows([i])[0]["input_ids"][:24])
            return f"example {i} of the prepared file ({self.lengths[i]} tokens, starting {start!r})"

        old = self.micro
        self.micro = halve(error, pieces, micro=old, lengths=self.lengths, step=self.state.step, fsdp=self.fsdp,
                           optimizer=self.optimizer, checkpoint_dir=self.spec.checkpoint_dir, describe=describe,
                           device=self.device)
        sizes = self._sizes()
        log.warning("out of memory at step %d (%s): micro-batch %d -> %d examples per forward pass, %d forwards "
                    "per optimizer step; the effective batch and the loss are unchanged", self.state.step + 1,
                    error, old, self.micro, sizes["gradient_accumulation"])
        self.state.micro_batch_size = self.micro
        self.progress.update(**sizes, notice=f"out of memory: micro-batch {old} -> {self.micro}")
        record_micro_batch(self.spec.checkpoint_dir, self.micro)  # by the rank that ran out (atomic, all agree)

    def train(self) -> dict:
        import torch

        cfg, st = self.cfg, self.state
        k = cfg.gradient_accumulation
        self.progress.set_status("training", f"step {st.step} of {self.total_steps}")
        t0, steps_here, tokens_here = time.time(), 0, 0
        while st.epoch < cfg.epochs:
            epoch = st.epoch
            plan = self.plans[epoch]
            while st.mb_index < len(plan):
                self._obey()
                group = plan[st.mb_index:st.mb_index + k]
                step_loss, n_trained = self._step(group)
                report_layers = self.layer_stats is not None and ((st.step + 1) % cfg.layer_stats_steps == 0
                                                                  or st.step + 1 == self.total_steps)
                if report_layers:
                    self.layer_stats.grads()  # every micro-batch accumulated, before clipping and zero_grad
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

                tokens = sum(self.lengths[i] for mb in group for rows in mb for i in rows)  # non-padding, all ranks
                st.mb_index += len(group)
                st.step += 1
                st.tokens_seen += tokens
                st.trained_tokens += n_trained
                st.examples_done += sum(len(rows) for mb in group for rows in mb)
                st.loss = step_loss if n_trained else None
                if st.loss is not None:
                    st.loss_ema = step_loss if st.loss_ema is None else (
                        EMA_BETA * st.loss_ema + (1 - EMA_BETA) * step_loss)
                st.grad_norm, st.learning_rate = grad_norm, lr
                steps_here += 1
                tokens_here += tokens
                elapsed = time.time() - t0 - self.paused_s
                tps = tokens_here / elapsed if elapsed > 0 else None
                sps = elapsed / steps_here
                if report_layers:
                    doc = self.layer_stats.report(st.step)
                    self.progress.update(write=False, layer_activity_summary=layer_summary(doc))
                    if self.events is not None:
                        self.events.layers(doc)
                self.progress.update(
                    status="training", status_detail=f"step {st.step} of {self.total_steps}",
                    epoch=epoch, step=st.step, progress=st.step / max(1, self.total_steps),
                    examples_done=st.examples_done, tokens_seen=st.tokens_seen, loss=st.loss,
                    loss_ema=st.loss_ema, learning_rate=lr, grad_norm=grad_norm, tokens_per_s=tps,
                    seconds_per_step=sps, eta_seconds=sps * (self.total_steps - st.step))
                self.progress.metric({"t": time.time(), "job_id": self.spec.job_id, "step": st.step,
                                      "epoch": epoch, "loss": st.loss, "learning_rate": lr,
                                      "grad_norm": grad_norm, "tokens_per_s": tps, "tokens_seen": st.tokens_seen,
                                      "examples_done": st.examples_done})
                if self.events is not None:
                    self.events.scalars(st.step, {"loss": st.loss, "learning_rate": lr, "grad_norm": grad_norm,
                                                     "tokens_per_s": tps, "tokens_seen": st.tokens_seen})
                if st.mb_index >= len(plan):
                    st.epoch += 1
                    st.mb_index = 0
                crash_point("step")
                if cfg.eval_steps and st.step % cfg.eval_steps == 0 and st.step < self.total_steps:
                    self.evaluate()
                if st.step % cfg.save_steps == 0 and st.step < self.total_steps:
                    self.save_checkpoint()
                if st.epoch != epoch:
                    break
        self._obey()  # a stop/skip during the last step still counts
        self.evaluate()
        self.progress.set_status("saving", "final checkpoint")
        final = self.save_checkpoint()
        return {"final_checkpoint": str(final), "seconds_training": time.time() - t0 - self.paused_s}

    def _autocast(self):
        import contextlib

        import torch

        from trainingd.train.model import uses_autocast

        if uses_autocast(self.precision, self.device):
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()  # fp32, or a CPU base stored in bf16: nothing to re-cast

    def evaluate(self) -> float | None:
        """Mean token loss over the held-out set (None without one)."""
        import torch

        from trainingd.train import data

        ev = self.prepared.eval
        if ev is None or len(ev) == 0 or not (self.is_main or self.fsdp):  # sharded: every rank joins the forwards
            return None
        self.progress.set_status("evaluating", f"eval at step {self.state.step}")
        self.model.eval()
        total, count = 0.0, 0
        plan = data.plan_batches(list(ev["length"]), self.cfg.batch_size, seed=self.cfg.seed, epoch=0,
                                 packing=False, max_length=self.cfg.max_length)
        with torch.no_grad():
            for mb in plan:
                cols = ev[list(mb)]
                rows = [{c: cols[c][i] for c in cols} for i in range(len(mb))]
                b = {kk: v.to(self.device) for kk, v in data.collate(rows, self.tokenizer.pad_token_id).items()}
                total += float(self.loss_module(**b))  # not DDP's wrapper: no gradient, nothing to sync
                count += data.num_trained_tokens(b)
        self.model.train()
        if not self.is_main:
            return None
        value = total / count if count else None
        self.state.eval_loss = value
        self.progress.update(eval_loss=value, status="training")
        self.progress.metric({"t": time.time(), "job_id": self.spec.job_id, "step": self.state.step,
                              "epoch": self.state.epoch, "eval_loss": value})
        if self.events is not None:
            self.events.scalars(self.state.step, {"eval_loss": value})
        return value

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self) -> Path:
        import numpy as np
        import torch

        step = self.state.step
        if self.last_saved_step == step:
            return self.spec.checkpoint_dir / ckpt.step_dir_name(step)
        prev_status = self.progress.fields["status"]
        self.progress.update(status="saving", status_detail=f"checkpoint at step {step}")

        # Every rank's RNG state goes into the checkpoint (a collective: all ranks save at the same step).
        rngs = self.group.gather({"python": random.getstate(), "numpy": np.random.get_state(),
                                  "torch": torch.get_rng_state(),
                                  "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None})
        self.state.world_size = self.group.world
        self.state.strategy = "fsdp" if self.fsdp else "ddp"
        self.state.micro_batch_size = None if self.micro >= UNSPLIT else self.micro
        adapter_sd = optimizer_sd = None
        if self.fsdp:  # gathered by every rank; only the main process's copy holds the values
            full, optimizer_sd = dist_.full_state(self.wrapped, self.optimizer)
            prefix = "model."  # the loss module's name for the PEFT model
            adapter_sd = {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}
        if not self.is_main:
            self.last_saved_step = step
            self.group.barrier()  # the checkpoint exists on return, on every rank
            return self.spec.checkpoint_dir / ckpt.step_dir_name(step)

        def write(folder: Path) -> None:
            if adapter_sd is not None:
                self.model.save_pretrained(str(folder), state_dict=adapter_sd)
                torch.save(optimizer_sd, folder / "optimizer.pt")  # keyed by parameter name, whole tensors
            else:
                self.model.save_pretrained(str(folder))
                torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")
            for rank, rng in enumerate(rngs):
                torch.save(rng, folder / _rng_file(rank))
            # Every rank's data position: the same global micro-batch index (ranks take slices of it).
            (folder / ckpt.STATE).write_text(json.dumps({**self.state.state_dict(), "total_steps": self.total_steps,
                                                         "rank_positions": [{"rank": r, "epoch": self.state.epoch,
                                                                             "mb_index": self.state.mb_index}
                                                                            for r in range(self.group.world)]},
                                                        indent=2, allow_nan=False) + "\n")

        manifest = {**self.expected, "data_file": str(self.spec.dataset), "config": self.cfg.to_dict(),
                    "versions": ckpt.versions(), "total_steps": self.total_steps, "precision": self.precision}
        final = ckpt.save_checkpoint(self.spec.checkpoint_dir, step, write_files=write, manifest=manifest,
                                     keep=self.cfg.keep_checkpoints)
        self.last_saved_step = step
        log.info("checkpoint %s", final)
        self.group.barrier()
        crash_point("checkpoint")
        if prev_status in ("training", "evaluating"):
            self.progress.update(status=prev_status, status_detail=f"step {step} of {self.total_steps}")
        return final

    def _load_checkpoint(self, folder: Path) -> None:
        import numpy as np
        import torch

        saved = json.loads((folder / ckpt.STATE).read_text())
        made_with = int(saved.get("world_size") or 1)
        if made_with != self.group.world:
            raise ckpt.CheckpointMismatch(
                f"checkpoint {folder} was made by {made_with} training process(es) and this run has "
                f"{self.group.world}: each process's data shard and RNG state are part of exact resume. Set "
                f"distributed.num_processes back to {made_with} to resume it, or skip the job to train it afresh")
        strategy = "fsdp" if self.fsdp else "ddp"
        if saved.get("strategy", "ddp") != strategy:
            raise ckpt.CheckpointMismatch(
                f"checkpoint {folder} was made with distributed.strategy {saved.get('strategy', 'ddp')!r} and this "
                f"run uses {strategy!r}: the optimizer state is stored differently. Set the strategy back to "
                f"resume it, or skip the job to train it afresh")
        if self.fsdp:
            whole = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True) if self.is_main else None
            dist_.load_full_optimizer_state(self.wrapped, self.optimizer, whole)
        else:
            # accelerate names a CPU process's device "cpu:<rank>", which torch.load cannot map to
            where = "cpu" if self.device.type == "cpu" else self.device
            self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=where,
                                                      weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
        rng = torch.load(folder / _rng_file(self.group.rank), weights_only=False)
        random.setstate(rng["python"])
        np.random.set_state(rng["numpy"])
        torch.set_rng_state(rng["torch"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if saved.get("total_steps") != self.total_steps:
            raise ckpt.CheckpointMismatch(f"checkpoint {folder} planned {saved.get('total_steps')} steps, "
                                          f"this run plans {self.total_steps} (batch settings differ)")
        self.state.load_state_dict(saved)
        if saved.get("micro_batch_size"):
            self.micro = min(self.micro, int(saved["micro_batch_size"]))
        self.last_saved_step = self.state.step
        log.info("resumed from %s at step %d (epoch %d, micro-batch %d)", folder, self.state.step,
                 self.state.epoch, self.state.mb_index)

    # --------------------------------------------------------------- publish
    def next_adapter_state(self) -> dict:
        """The adapter state this job's adapter has once published (a new generation listing this job)."""
        entry = {"job_id": self.spec.job_id, "sha256": self.data_sha256, "file": Path(self.spec.dataset).name,
                 "steps": self.state.step, "finished_at": time.time()}
        return adapter_state.next_state(self.prev_state, entry=entry, base_model=self.expected["base_model"],
                                        base_model_hash=self.base_hash, locked=self.expected["locked"],
                                        model_name=self.cfg.model_name)

    def publish(self, final: Path, state: dict | None = None) -> dict:
        state = state or self.next_adapter_state()

        def before_state() -> None:
            # The optimizer goes beside the weights before adapter_state.json (the commit point) names them.
            if self.cfg.lr_schedule == "stream":
                stream.write_carried(self.spec.output_dir, final / "optimizer.pt",
                                     generation_id=state["generation_id"],
                                     optimizer_steps=getattr(self, "carried_steps", 0) + self.state.step,
                                     strategy="fsdp" if self.fsdp else "ddp", world_size=self.group.world)
            else:
                stream.remove_carried(self.spec.output_dir)
            crash_point("publish")

        ckpt.publish_adapter(final, self.spec.output_dir, state, before_state=before_state)
        log.info("published the adapter to %s", self.spec.output_dir)
        return state

    def summary(self, extra: dict | None = None) -> dict:
        st = self.state
        return {"steps": st.step, "total_steps": getattr(self, "total_steps", None), "loss": st.loss,
                "loss_ema": st.loss_ema, "eval_loss": st.eval_loss, "tokens": st.tokens_seen,
                "trained_tokens": st.trained_tokens, "examples": st.examples_done,
                "seconds": time.time() - self.t_start,
                "num_processes": self.group.world if hasattr(self, "group") else 1,
                "micro_batch_size": st.micro_batch_size, "precision": getattr(self, "precision", None),
                "data": json_safe(self.prepared.report) if hasattr(self, "prepared") else None,
                **({"notice": self.notice} if self.notice else {}), **(extra or {})}

    def cleanup(self) -> None:
        self.progress.stop_heartbeat()
        if self.events is not None:
            self.events.close()


def _rng_file(rank: int) -> str:
    """Rank 0's RNG file keeps the single-process name, so older checkpoints resume unchanged."""
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


def run(spec: RunSpec) -> RunResult:
    """Train one file as ``spec`` says; returns the exit code, reason and summary (raises on a crash)."""
    recipe = Recipe(spec)
    try:
        early = recipe.setup()
        if early is not None:
            return early
        gate = _gate(recipe)
        if gate is not None:
            gate.champion()
        out = recipe.train()
        if not recipe.is_main:  # the main process publishes; the others are done
            return RunResult(exit_codes.OK, summary=json_safe(recipe.summary()))
        final = Path(out["final_checkpoint"])
        extra = {"seconds_training": out["seconds_training"], "precision": recipe.precision}
        decision, scores = gate.judge() if gate is not None else (None, None)
        if decision is not None and decision["outcome"] == "rejected":
            _keep_rejected(recipe, final, decision, scores)
            detail = "rejected by the gate; kept as a snapshot"
        else:
            state = recipe.publish(final)
            if scores is not None:
                from trainingd.contracts.gate_scores import write_gate_scores

                # The new champion's scores, beside it: the next job compares with them without scoring again.
                write_gate_scores(spec.output_dir, {**scores, "generation_id": state["generation_id"]})
            detail = "published"
        ckpt.remove_checkpoints(spec.checkpoint_dir)
        if decision is not None:
            extra["gate"] = decision
        summary = recipe.summary(extra)
        recipe.progress.update(status="saving", status_detail=detail)
        return RunResult(exit_codes.OK, summary=json_safe(summary))
    except _Exit as e:
        return RunResult(e.code, reason=e.reason, summary=json_safe(recipe.summary()))
    except ckpt.AdapterMismatch as e:
        return RunResult(exit_codes.ADAPTER_MISMATCH, reason=str(e))
    except ckpt.CheckpointMismatch as e:
        return RunResult(exit_codes.CHECKPOINT_MISMATCH, reason=str(e))
    except OutOfMemory as e:
        # The file cannot be trained on this device as configured: a data error with the example named.
        return RunResult(exit_codes.DATA_ERROR, reason=str(e))
    finally:
        recipe.cleanup()


def _gate(recipe: Recipe):
    """The gate of this job, or None (off, standalone, or a sharded model that one process cannot score)."""
    spec = recipe.spec
    if not recipe.cfg.gate.enabled or spec.home is None:
        return None
    if recipe.fsdp:
        log.warning("gate: not applied under distributed.strategy fsdp (no process holds the whole model)")
        return None
    if not recipe.is_main:
        return None
    from trainingd.paths import Home
    from trainingd.train.gate_eval import Gate

    try:
        return Gate(recipe, Home.at(spec.home))
    except (OSError, ValueError) as e:  # no held-out set to judge with: a config problem, never retried in a loop
        raise _Exit(exit_codes.CONFIG_ERROR, f"gate.enabled needs a held-out set (evaluation.eval_file or the "
                                             f"generator's /eval): {e}") from None


def _keep_rejected(recipe: Recipe, final: Path, decision: dict, scores: dict | None) -> None:
    """A rejected candidate is not published: it becomes a pinned snapshot marked rejected (nothing is lost)."""
    from trainingd.lifecycle.snapshots import keep_rejected
    from trainingd.paths import Home

    spec = recipe.spec
    state = recipe.next_adapter_state()
    trained_file = {"job_id": spec.job_id, "name": Path(spec.dataset).name, "sha256": recipe.data_sha256,
                    "lines": None, "trained_tokens": recipe.state.trained_tokens}
    snap = keep_rejected(Home.at(spec.home), final, state, trained_file=trained_file, decision=decision,
                         scores={**scores, "generation_id": state["generation_id"]} if scores else None,
                         config=recipe.cfg.to_dict(), result=recipe.summary())
    decision["snapshot"] = snap.name


def execute(spec: RunSpec, reason_file: Path | None) -> int:
    """Run and report: the result JSON into ``reason_file``; a crash's traceback to stderr. Returns the exit code."""
    try:
        result = run(spec)
    except Exception as e:  # every other failure is a crash the daemon may retry
        traceback.print_exc()
        result = RunResult(exit_codes.CRASH, reason=f"{type(e).__name__}: {e}",
                           details=[{"traceback": traceback.format_exc()}])
        if isinstance(e, OSError) and e.errno in errno.errorcode:
            result.details.append({"errno": errno.errorcode[e.errno]})  # the daemon tells a full disk apart
    if result.exit_code != exit_codes.OK:
        log.warning("trainer exit %s: %s", exit_codes.name_of(result.exit_code), result.reason)
    if reason_file is not None and dist_.env_rank() == 0:  # one result per job: the main process's
        write_result(reason_file, result)
    if dist_.is_launched() and result.exit_code != exit_codes.CRASH:
        # The group ended as it agreed: the result file carries the code (the launcher counts any non-zero
        # worker as a failure); a crash exits non-zero so the launcher brings the whole group down.
        dist_.close_group()
        return exit_codes.OK
    return result.exit_code
