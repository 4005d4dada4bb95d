"""Several training processes as one job: who writes, what every rank agrees on, which rows each one trains.

One code path serves 1 CPU, 1 GPU and N processes (one machine or several): the recipe asks a :class:`Group`
and, with one process, every method is a plain return with no communication.

* **Data.** Every rank builds the same plan of *global* micro-batches (``batch_size x world_size`` examples, from
  ``plan_batches(seed, epoch)``) and trains the contiguous slice :func:`shard` gives it, so each example is seen
  once per epoch and two processes with micro-batch ``b`` train exactly the examples one process with micro-batch
  ``2b`` would (accelerate's DataLoader sharding would pad the last batch with repeated examples). A rank whose
  slice is empty trains one row with no trained token (zero loss and gradient) so that it still joins the
  gradient all-reduce.
* **Control.** :meth:`Group.agree` is called by every rank at the same step boundary: the main process contributes
  what the daemon asked (``control/trainer_command.json``), every rank its own signals (SIGTERM, parent gone), and
  all take the strongest (``skip > stop > pause > run``). No rank is ever left waiting in a collective.
* **Writes.** Only the main process writes progress, metrics, checkpoints and the adapter (the recipe checks
  ``Group.is_main``); every rank's RNG state is gathered into the checkpoint.
* **Sharding** (``distributed.strategy: fsdp``). :meth:`Group.fully_shard` shards the LoRA model with torch's
  FSDP2 (``fully_shard`` on each decoder block, then on the loss module), on the CPU (gloo) as on GPUs (NCCL), so
  the tested path is the one that runs on a cluster (accelerate enables its own FSDP plugin for GPUs only). Every
  rank runs the same number of forward passes per step (FSDP gathers each block's weights in every forward);
  only the main process reads the base from disk: the others build the model on the meta device and receive
  their shards from it (:meth:`Group.fill_from_main`), so host memory holds one copy of the base, not N;
  the adapter and the optimizer are gathered in full (:func:`full_state`) for the checkpoint, frozen weights never.
* **Exit.** Under the daemon's launcher (``TRAININGD_LAUNCHER=1``) a rank that ends as the group agreed exits 0
  and the main process's result file carries the job's exit code, because ``torchrun`` reports any non-zero worker
  as a failure of the whole group; a crash exits non-zero, so the launcher brings the group down and the daemon
  sees one failure.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

log = logging.getLogger(__name__)

LAUNCHER_ENV = "TRAININGD_LAUNCHER"
ACCELERATE_FSDP_ENV = "ACCELERATE_USE_FSDP"
ACTION_ORDER = ("run", "pause", "stop", "skip")


def is_launched() -> bool:
    """True when the daemon started this process through a launcher (torchrun / accelerate launch)."""
    return os.environ.get(LAUNCHER_ENV) == "1"


def env_rank() -> int:
    """This process's global rank as the launcher set it (0 without one); known before torch is imported."""
    return int(os.environ.get("RANK", "0") or 0)


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def wants_fsdp(strategy: str) -> bool:
    """Shard the model? The config says so, or an accelerate config file did (``accelerate launch`` then sets
    ``ACCELERATE_USE_FSDP``). The variable is removed so that accelerate does not wrap the model a second time:
    the recipe shards it itself, the same way on every device."""
    from_launcher = os.environ.pop(ACCELERATE_FSDP_ENV, "false").lower() == "true"
    return strategy == "fsdp" or from_launcher


def shard(rows: list[int], rank: int, world: int) -> list[int]:
    """The contiguous slice of one global micro-batch that ``rank`` trains (may be empty for the last ranks)."""
    if world <= 1:
        return list(rows)
    per = math.ceil(len(rows) / world)
    return list(rows[rank * per:(rank + 1) * per])


def parent_alive(parent_pid: int | None) -> bool:
    """Is the daemon that started us still there? Under a launcher it is an ancestor, not the parent."""
    if parent_pid is None:
        return True
    if os.getppid() == parent_pid:
        return True
    if not is_launched():
        return False
    import psutil

    try:
        return any(p.pid == parent_pid for p in psutil.Process().parents())
    except psutil.Error:
        return False


class Group:
    """The processes of one job, as the recipe sees them (a thin layer over ``accelerate``, ``torch.distributed``)."""

    def __init__(self, accelerator: Any):
        self.accelerator = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes
        self.is_main = accelerator.is_main_process

    def agree(self, local: str) -> str:
        """Every rank calls this at the same point with its own view; all get the strongest action."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        views: list[Any] = [None] * self.world
        dist.all_gather_object(views, local)
        return max(views, key=lambda a: ACTION_ORDER.index(a) if a in ACTION_ORDER else 0)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64: token counts stay exact)."""
        if self.world == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        dist.all_reduce(t)
        return t.tolist()

    def max(self, value: int) -> int:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.int64, device=self.accelerator.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def scatter_from_main(self, objs: list[Any] | None) -> Any:
        """The main process's ``objs[rank]`` on each rank (checkpoint RNG states on resume)."""
        if self.world == 1:
            return objs[0] if objs else None
        import torch.distributed as dist

        box = [objs]
        dist.broadcast_object_list(box, src=0)
        return (box[0] or [None] * self.world)[self.rank]

    def fully_shard(self, module: Any, block_types: set[str]) -> Any:
        """Shard ``module`` over every rank with FSDP2: each submodule whose class is in ``block_types`` (the
        model's decoder layers) is one unit, the rest (embeddings, head, final norm) the root's. Parameters become
        DTensors on this rank's device: build the optimizer from ``module.parameters()`` afterwards."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.accelerator.device.type, (self.world,))
        blocks = [m for m in module.modules() if type(m).__name__ in block_types]
        if not blocks:
            log.warning("no %s blocks found: the model is sharded as one unit (no memory saved while it runs)",
                        "/".join(sorted(block_types)) or "decoder")
        for m in blocks:
            fully_shard(m, mesh=mesh)
        fully_shard(module, mesh=mesh)
        log.info("model sharded over %d processes (FSDP2, %d blocks)", self.world, len(blocks))
        return module

    def fill_from_main(self, module: Any, full: dict) -> None:
        """Give every rank's shards of ``module`` (sharded by :meth:`fully_shard`; on the other ranks built on the
        meta device) the main process's weights ``full`` (its ``state_dict()``; empty on the others), then its
        buffers and torch RNG state, so that only the main process ever reads the base from disk."""
        import torch
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        # Buffers (rotary frequencies, most not in a state dict): small, sent whole, in the same order everywhere.
        device = self.accelerator.device
        for name, buf in list(module.named_buffers()):
            owner, _, attr = name.rpartition(".")
            mod = module.get_submodule(owner) if owner else module
            local = buf.to(device) if not buf.is_meta else torch.empty(buf.shape, dtype=buf.dtype, device=device)
            dist.broadcast(local, src=0)
            mod._buffers[attr] = local
        # The main process initialised the LoRA weights (drawing random numbers); every rank continues from there.
        torch.set_rng_state(self.scatter_from_main([torch.get_rng_state()] * self.world))
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:
            raise RuntimeError(f"rank {self.rank}: {len(left)} tensors left unfilled after sharding, e.g. {left[:3]}")

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()


def close_group() -> None:
    """Leave the process group before the interpreter exits. Left to exit-time destruction, gloo's worker threads
    can abort the process ("terminate called without an active exception", SIGABRT) after a job that ended well,
    which the launcher reports as a failure of the whole group. Local: no rank waits for another."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def full_state(module: Any, optimizer: Any) -> tuple[dict, dict]:
    """The trainable weights and the optimizer state of a sharded ``module``, gathered in full onto the main
    process's CPU (empty on the others). A collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(module, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                      ignore_frozen_params=True))


def load_full_optimizer_state(module: Any, optimizer: Any, state: dict | None) -> None:
    """Load a full optimizer state (read by the main process; ``None`` on the others) into every rank's shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(module, optimizer, state or {},
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
