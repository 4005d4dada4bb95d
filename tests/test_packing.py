"""Batching: length-grouped micro-batches, right padding without a mask, and padding-free packing.

The key check runs the real tiny model: a packed row (restarting position_ids, no attention_mask,
use_cache=False) gives the same token-weighted loss as the same examples run one by one.

    .venv/bin/pytest tests/test_packing.py -q
"""

from __future__ import annotations

import random

import pytest
import torch

from trainingd.train.batches import collate, num_trained_tokens, plan_batches
from trainingd.train.data import Encoder

IGNORE = -100


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def model(tiny_model):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="sdpa", dtype=torch.float32)
    return m.eval()


@pytest.fixture(scope="module")
def rows(tokenizer) -> list[dict]:
    """Six chat examples of clearly different lengths, as prepared rows."""
    rng = random.Random(3)
    words = "the model learns to answer questions about data files and the queue quickly".split()
    convs = []
    for n_user, n_answer in [(2, 1), (12, 9), (5, 30), (1, 3), (20, 2), (7, 7)]:
        convs.append([{"role": "user", "content": " ".join(rng.choice(words) for _ in range(n_user))},
                      {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(n_answer))}])
    pairs = Encoder(tokenizer, "completion").encode_chats(convs, list(range(1, 7)))
    return [{"input_ids": ids, "labels": labels, "length": len(ids)} for ids, labels in pairs]


def summed_loss(model, batch: dict) -> tuple[float, int]:
    """(sum of per-token cross-entropy over trained tokens, trained token count), computed from the logits."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
    labels = batch["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(),
                                             labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return float(loss), int((labels != IGNORE).sum())


def test_packed_loss_equals_one_by_one_and_padded_loss(model, tokenizer, rows):
    pad = tokenizer.pad_token_id
    one_by_one = [summed_loss(model, collate([r], pad)) for r in rows]
    alone = sum(s for s, _ in one_by_one) / sum(n for _, n in one_by_one)
    padded_sum, padded_n = summed_loss(model, collate(rows, pad))
    packed_sum, packed_n = summed_loss(model, collate(rows, pad, packing=True))
    assert packed_n == padded_n == sum(n for _, n in one_by_one)
    assert abs(padded_sum / padded_n - alone) < 1e-5
    assert abs(packed_sum / packed_n - alone) < 1e-5


def test_without_restarting_positions_packed_examples_see_each_other(model, tokenizer, rows):
    # Shows the equality above is not vacuous: the same packed row with positions 0..N-1 is one long
    # sequence, so later examples attend to earlier ones and the loss changes.
    pad = tokenizer.pad_token_id
    packed = collate(rows, pad, packing=True)
    glued = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).unsqueeze(0))
    (a, n), (b, _) = summed_loss(model, packed), summed_loss(model, glued)
    assert abs(a / n - b / n) > 1e-4  # ten times the tolerance of the equality test


def test_transformers_reads_restarting_positions_as_separate_sequences(tokenizer, rows):
    from transformers.masking_utils import find_packed_sequence_indices

    batch = collate(rows[:3], tokenizer.pad_token_id, packing=True)
    seq = find_packed_sequence_indices(batch["position_ids"])
    lengths = [r["length"] for r in rows[:3]]
    assert seq[0].tolist() == [i for i, n in enumerate(lengths) for _ in range(n)]
    assert find_packed_sequence_indices(collate(rows, tokenizer.pad_token_id)["position_ids"]) is None


def test_collate_pads_right_without_attention_mask(tokenizer, rows):
    pad = tokenizer.pad_token_id
    batch = collate(rows[:3], pad)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    width = max(r["length"] for r in rows[:3])
    assert batch["input_ids"].shape == (3, width)
    for b, r in enumerate(rows[:3]):
        n = r["length"]
        assert batch["input_ids"][b, :n].tolist() == r["input_ids"]
        assert batch["labels"][b, :n].tolist() == r["labels"]
        assert (batch["input_ids"][b, n:] == pad).all() and (batch["labels"][b, n:] == IGNORE).all()
        assert batch["position_ids"][b].tolist() == list(range(width))


def test_packed_collate_restarts_positions_and_never_trains_across_examples(tokenizer, rows):
    # Give every example a trained first token, as a raw-text row would have if unguarded.
    trained_first = [dict(r, labels=[r["input_ids"][0]] + r["labels"][1:]) for r in rows[:3]]
    batch = collate(trained_first, tokenizer.pad_token_id, packing=True)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].shape == (1, sum(r["length"] for r in rows[:3]))
    starts, at = [], 0
    for r in rows[:3]:
        starts.append(at)
        assert batch["position_ids"][0, at:at + r["length"]].tolist() == list(range(r["length"]))
        at += r["length"]
    assert all(batch["labels"][0, s] == IGNORE for s in starts)


def test_num_trained_tokens_counts_the_shifted_labels(tokenizer, rows):
    pad = tokenizer.pad_token_id
    per_row = [sum(1 for x in r["labels"][1:] if x != IGNORE) for r in rows]
    assert num_trained_tokens(collate(rows, pad)) == sum(per_row)
    assert num_trained_tokens(collate(rows, pad, packing=True)) == sum(per_row)
    labels = torch.tensor([[5, 6, IGNORE, 7], [IGNORE, IGNORE, 8, IGNORE]])
    assert num_trained_tokens({"labels": labels}) == 3


def random_lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(8, 256) for _ in range(n)]


def test_plan_batches_is_deterministic_per_seed_and_epoch_and_covers_every_row_once():
    lengths = random_lengths(1000)
    plan = plan_batches(lengths, 4, seed=1, epoch=0, max_length=256)
    assert plan == plan_batches(lengths, 4, seed=1, epoch=0, max_length=256)
    assert plan != plan_batches(lengths, 4, seed=1, epoch=1, max_length=256)
    assert plan != plan_batches(lengths, 4, seed=2, epoch=0, max_length=256)
    assert sorted(i for b in plan for i in b) == list(range(1000))
    assert all(1 <= len(b) <= 4 for b in plan) and len(plan) == 250


def test_length_grouped_batches_need_far_less_padding_than_random_ones():
    lengths = random_lengths(2000)

    def padding(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    order = list(range(2000))
    random.Random(0).shuffle(order)
    naive = [order[i:i + 8] for i in range(0, 2000, 8)]
    planned = plan_batches(lengths, 8, seed=0, epoch=0, max_length=256)
    assert padding(planned) < 0.1 * padding(naive)
    # Batches are shuffled, not served shortest-first.
    firsts = [max(lengths[i] for i in b) for b in planned[:20]]
    assert firsts != sorted(firsts)


def test_packing_fills_rows_up_to_max_length():
    lengths = random_lengths(500)
    plan = plan_batches(lengths, 4, seed=0, epoch=0, packing=True, max_length=512)
    assert sorted(i for b in plan for i in b) == list(range(500))
    assert all(sum(lengths[i] for i in b) <= 512 for b in plan)
    fill = sum(lengths) / (len(plan) * 512)
    assert fill > 0.9, fill
    assert plan == plan_batches(lengths, 4, seed=0, epoch=0, packing=True, max_length=512)
