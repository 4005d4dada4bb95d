"""Prepared rows -> micro-batches: which rows go together (``plan_batches``) and their tensors (``collate``).

    plan = plan_batches(prepared.train["length"], cfg.batch_size, seed=cfg.seed, epoch=0, packing=cfg.packing,
                        max_length=cfg.max_length)
    batch = collate([prepared.train[i] for i in plan[0]], tokenizer.pad_token_id, packing=cfg.packing)
    loss = model(**batch, use_cache=False).loss    # no attention_mask: see ``collate``

The rows come from ``trainingd.train.data.prepare_dataset`` (input_ids, labels with -100 where no loss is taken,
length).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

from trainingd.train.masking import IGNORE

if TYPE_CHECKING:
    import torch


# Micro-batches are formed from windows of this many batches' worth of shuffled examples, sorted by length:
# wide enough to leave little padding (same tokens/s as 50 in bench/train_throughput.py), narrow enough that
# batches stay mixed (the held-out loss moved towards that of random batches as the window shrank).
GROUP_CHUNK = 16


def plan_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, packing: bool = False,
                 max_length: int) -> list[list[int]]:
    """The micro-batches of one epoch as lists of row indices; deterministic for (seed, epoch).

    Without packing: shuffle, then sort chunks of GROUP_CHUNK x batch_size by length and cut them into micro-batches of
    ``batch_size`` (so a batch holds similar lengths and little padding), then shuffle the batches.
    With packing: each micro-batch is one packed row of examples whose lengths sum to at most ``max_length``
    (first-fit decreasing within the same shuffled chunks), and the rows are shuffled.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = [int(x) for x in lengths]
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = GROUP_CHUNK * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i], reverse=packing)
        if not packing:
            batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
            continue
        bins: list[list[int]] = []
        room: list[int] = []
        for i in part:
            n = min(lengths[i], max_length)
            for b, free in enumerate(room):
                if n <= free:
                    bins[b].append(i)
                    room[b] -= n
                    break
            else:
                bins.append([i])
                room.append(max_length - n)
        batches += bins
    rng.shuffle(batches)
    return batches


def collate(rows: list[dict], pad_token_id: int, *, packing: bool = False) -> dict[str, "torch.Tensor"]:
    """Stack rows into ``input_ids``, ``labels`` and ``position_ids`` tensors, padded on the right.

    There is never an ``attention_mask``: with causal attention and right padding no real token attends to
    padding, and without a mask sdpa takes its fast causal path. With ``packing`` the rows are concatenated into
    one sequence whose position_ids restart at 0 for each example; transformers (masking_utils,
    ``find_packed_sequence_indices``) turns restarting positions into a block-diagonal causal mask when there is
    no attention_mask and no cache, so call the model with ``use_cache=False``.
    """
    import torch

    if not rows:
        raise ValueError("collate needs at least one row")
    if packing:
        ids, labels, pos = [], [], []
        for r in rows:
            ids += r["input_ids"]
            labels += r["labels"]
            # Belt and braces: the first label of an example must never be predicted from the previous one.
            labels[len(labels) - len(r["labels"])] = IGNORE
            pos += range(len(r["input_ids"]))
        seqs = [(ids, labels, pos)]
    else:
        seqs = [(list(r["input_ids"]), list(r["labels"]), list(range(len(r["input_ids"])))) for r in rows]
    width = max(len(s[0]) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    label_t = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, (i, lab, p) in enumerate(seqs):
        n = len(i)
        input_ids[b, :n] = torch.tensor(i, dtype=torch.long)
        label_t[b, :n] = torch.tensor(lab, dtype=torch.long)
        position_ids[b, :n] = torch.tensor(p, dtype=torch.long)
        # Padding continues the positions of the last sequence, so it never looks like a packed example start
        # (it is causal and after every real token, so nothing real attends to it either way).
        if n < width:
            position_ids[b, n:] = torch.arange(p[-1] + 1 if p else 0, p[-1] + 1 + width - n if p else width - n)
    return {"input_ids": input_ids, "labels": label_t, "position_ids": position_ids}


def num_trained_tokens(batch: dict) -> int:
    """Tokens that produce loss: ``labels[:, 1:] != -100`` (the model shifts labels by one)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
