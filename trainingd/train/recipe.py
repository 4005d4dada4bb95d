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

The loop and its setup are here; :class:`Recipe` takes the rest from mixins named after what they hold:
``step.py`` (one optimizer step's forwards and backwards, OOM recovery), ``optimizer.py`` (AdamW, LR schedules,
the optimizer step), ``control.py`` (pause/stop/skip at step boundaries), ``checkpointing.py`` (resume, save, load,
publish). ``gate_eval.py`` judges the candidate before :func:`run` publishes it.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import random
import time
import traceback
from pathlib import Path
from typing import Any

from trainingd import exit_codes
from trainingd.atomic_ops import json_safe
from trainingd.contracts import adapter_state
from trainingd.contracts.layer_activity import summary as layer_summary
from trainingd.contracts.result import RunResult, write_result
from trainingd.faults import fault_point
from trainingd.train import checkpoint as ckpt
from trainingd.train import distributed as dist_
from trainingd.train.checkpointing import Checkpointing
from trainingd.train.control import Control, RunExit
from trainingd.train.oom import UNSPLIT, OutOfMemory, start_micro_batch
from trainingd.train.optimizer import Optimization
from trainingd.train.run_state import RunState
from trainingd.train.spec import RunSpec, StopSignal
from trainingd.train.step import Steps
from trainingd.train.progress import Progress

__all__ = ["Recipe", "RunSpec", "StopSignal", "execute", "run"]  # RunSpec and StopSignal live in spec.py

log = logging.getLogger(__name__)

EMA_BETA = 0.9


# Fault injection (TRAININGD_CRASH_AT / TRAININGD_FAIL_AT): the points are listed in trainingd.faults.
crash_point = fault_point


class Recipe(Checkpointing, Control, Optimization, Steps):
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

    def _setup_schedule(self) -> None:
        """The batch plans, the step count and the LR schedule; then the checkpoint's state, or a seeded start."""
        import numpy as np

        cfg = self.cfg
        self.lengths = list(self.prepared.train["length"])
        self.plans = [self._global_plan(e) for e in range(cfg.epochs)]
        self.micro = self._start_micro_batch()
        k = cfg.gradient_accumulation
        self.total_steps = sum(math.ceil(len(p) / k) for p in self.plans)
        self.carried_steps = self._carry_optimizer()  # before the scheduler reads the rates
        self.scheduler = self._make_scheduler()
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from)
        else:
            random.seed(cfg.seed)
            np.random.seed(cfg.seed % 2**32)

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
        from trainingd.train import batches

        cfg, world = self.cfg, self.group.world
        size = cfg.batch_size if cfg.packing else cfg.batch_size * world
        plan = batches.plan_batches(self.lengths, size, seed=cfg.seed, epoch=epoch, packing=cfg.packing,
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

    # ----------------------------------------------------------------- train
    def train(self) -> dict:
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
                grad_norm, lr = self._apply_step()

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
                self._report_step(epoch, report_layers, tps, sps)
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

    def _report_step(self, epoch: int, report_layers: bool, tps: float | None, sps: float) -> None:
        """The step just taken into status, metrics.jsonl and TensorBoard, with the layer report when it is due."""
        st = self.state
        lr, grad_norm = st.learning_rate, st.grad_norm
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

        from trainingd.train import batches

        ev = self.prepared.eval
        if ev is None or len(ev) == 0 or not (self.is_main or self.fsdp):  # sharded: every rank joins the forwards
            return None
        self.progress.set_status("evaluating", f"eval at step {self.state.step}")
        self.model.eval()
        total, count = 0.0, 0
        plan = batches.plan_batches(list(ev["length"]), self.cfg.batch_size, seed=self.cfg.seed, epoch=0,
                                 packing=False, max_length=self.cfg.max_length)
        with torch.no_grad():
            for mb in plan:
                cols = ev[list(mb)]
                rows = [{c: cols[c][i] for c in cols} for i in range(len(mb))]
                b = {kk: v.to(self.device) for kk, v in batches.collate(rows, self.tokenizer.pad_token_id).items()}
                total += float(self.loss_module(**b))  # not DDP's wrapper: no gradient, nothing to sync
                count += batches.num_trained_tokens(b)
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


def run(spec: RunSpec) -> RunResult:
    """Train one file as ``spec`` says; returns the exit code, reason and summary (raises on a crash)."""
    recipe = Recipe(spec)
    try:
        early = recipe.setup()
        if early is not None:
            return early
        from trainingd.train import gate_eval

        gate = gate_eval.open_gate(recipe)
        if gate is not None:
            gate.champion()
        out = recipe.train()
        if not recipe.is_main:  # the main process publishes; the others are done
            return RunResult(exit_codes.OK, summary=json_safe(recipe.summary()))
        final = Path(out["final_checkpoint"])
        extra = {"seconds_training": out["seconds_training"], "precision": recipe.precision}
        decision, detail = gate_eval.publish_or_keep(recipe, gate, final)
        ckpt.remove_checkpoints(spec.checkpoint_dir)
        if decision is not None:
            extra["gate"] = decision
        summary = recipe.summary(extra)
        recipe.progress.update(status="saving", status_detail=detail)
        return RunResult(exit_codes.OK, summary=json_safe(summary))
    except RunExit as e:
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
