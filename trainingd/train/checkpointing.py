"""A run's checkpoints: which one to resume, saving the whole training state, loading it back, publishing.

A mixin of :class:`trainingd.train.recipe.Recipe` (it reads and sets the recipe's attributes). The folder layout,
the completion marker and the manifest check are ``trainingd.train.checkpoint`` (and the stdlib
``trainingd.contracts.checkpoint`` below it); this module holds what a checkpoint of *this run* contains: the
adapter, the optimizer, the scheduler, every rank's RNG state and the data position, so that a run stopped at step
k and resumed ends with the same adapter as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

from trainingd import exit_codes
from trainingd.contracts import adapter_state
from trainingd.contracts.manifest import read_manifest
from trainingd.contracts.result import RunResult
from trainingd.faults import fault_point
from trainingd.train import checkpoint as ckpt
from trainingd.train import distributed as dist_
from trainingd.train import stream
from trainingd.train.oom import UNSPLIT

log = logging.getLogger("trainingd.train.recipe")  # one logger for the recipe and its mixins


def rng_file(rank: int) -> str:
    """Rank 0's RNG file keeps the single-process name, so older checkpoints resume unchanged."""
    return "rng.pt" if rank == 0 else f"rng-rank{rank}.pt"


class Checkpointing:
    """The recipe's checkpoint methods: ``_setup_resume`` and ``_choose_precision`` during setup,
    ``save_checkpoint``/``_load_checkpoint``, and ``publish`` at the end."""

    def _setup_resume(self) -> RunResult | None:
        """Pick the checkpoint to resume (``self.resume_from``, or None); a job already trained ends the run."""
        spec = self.spec
        if spec.skip_if_trained and any((t.get("job_id"), t.get("sha256")) == (spec.job_id, self.data_sha256)
                                        for t in adapter_state.iter_trained(self.prev_state, spec.init_adapter)):
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
                torch.save(rng, folder / rng_file(rank))
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
        fault_point("checkpoint")
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
        rng = torch.load(folder / rng_file(self.group.rank), weights_only=False)
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
            fault_point("publish")

        ckpt.publish_adapter(final, self.spec.output_dir, state, before_state=before_state,
                             segments_from=[self.spec.init_adapter] if self.spec.init_adapter else [])
        log.info("published the adapter to %s", self.spec.output_dir)
        return state
