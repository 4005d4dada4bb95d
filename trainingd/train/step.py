"""One optimizer step's forwards and backwards, with the loss normalised over the whole step and OOM recovery.

A mixin of :class:`trainingd.train.recipe.Recipe` (it reads and sets the recipe's attributes), plus
:func:`forward_chunks`, which cuts a rank's micro-batch into forward passes. ``_step`` is the loop's step: the
summed token cross-entropy of every forward divided by the trained tokens of the whole step on all ranks, so ``k``
micro-batches of ``b`` equal one batch of ``k*b``; an out-of-memory error halves the examples per forward
(``trainingd.train.oom``) and redoes the step from the same weights and RNG state.
"""

from __future__ import annotations

import contextlib
import logging

from trainingd.train.oom import halve, oom_point, record_micro_batch

log = logging.getLogger("trainingd.train.recipe")  # one logger for the recipe and its mixins


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


class Steps:
    """The recipe's step methods: ``_step`` (forward and backward of one optimizer step) and its helpers."""

    def _rows(self, indices: list[int]) -> list[dict]:
        cols = self.prepared.train[list(indices)]
        keys = list(cols)
        return [{k: cols[k][i] for k in keys} for i in range(len(indices))]

    def _batch(self, rows: list[dict]) -> dict:
        from trainingd.train import batches

        batch = batches.collate(rows, self.tokenizer.pad_token_id, packing=self.cfg.packing)
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
