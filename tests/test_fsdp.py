"""Two sharded trainer processes on this CPU (``distributed.strategy: fsdp``: torch's FSDP2 over gloo), started by a
real daemon. The same sharding code runs on GPUs (NCCL).

    .venv/bin/python -m pytest tests/test_fsdp.py -x -q

* a file trained by two sharded processes gives the adapter of one process with twice the micro-batch (|diff| <=
  1e-5), with periodic evaluation and per-layer reports on (both gather the shards) agreeing too;
* with packing and gradient checkpointing, sharded and unsharded two-process runs end with the same adapter and
  report the same gradient norms (taken over the sharded gradients);
* a sharded job stopped mid-way and resumed by the next daemon ends with the uninterrupted adapter (the optimizer
  state is gathered into the checkpoint and scattered back); a DDP run cannot continue an FSDP checkpoint;
* an out-of-memory error in a sharded step ends the group; the daemon's retry resumes from the last checkpoint
  with half the examples per forward pass and ends with the adapter of a run that used that size throughout.
"""

from __future__ import annotations

import json

import pytest

from conftest import chat_lines, write_config, write_jsonl
from test_distributed import (TOLERANCE, TWO, adapter, max_diff, refused_reason, retry_to_the_end,
                              stop_mid_way, train_once)
from trainingd.atomic_ops import read_json, read_jsonl
from trainingd.paths import Home

pytestmark = pytest.mark.slow

FSDP = {**TWO, "strategy": "fsdp"}


def losses(home, key: str = "loss") -> list[float]:
    return [r[key] for r in read_jsonl(Home(home).metrics) if r.get(key) is not None]


def test_sharded_processes_train_the_adapter_of_one_with_twice_the_micro_batch(two_homes, tmp_path):
    one, two = two_homes
    data = write_jsonl(tmp_path / "data.jsonl", chat_lines(26, seed=3))
    for h in (one, two):  # evaluation and layer reports gather the shards: every rank must join them
        write_config(h, eval_fraction=0.1, eval_steps=1, layer_stats_steps=1)
    write_config(one, batch_size=4)
    write_config(two, batch_size=2, distributed=FSDP)
    h1 = train_once(one, data)
    h2 = train_once(two, data)
    assert h1["num_processes"] == 1 and h2["num_processes"] == 2
    # 23 training examples (3 held out): the last step's 7 split 4 + 3, so the ranks' forwards are padded to agree
    assert h1["steps"] == h2["steps"] == 3 and h1["examples"] == h2["examples"] == 23
    assert "model sharded over 2 processes (FSDP2, 2 blocks)" in Home(two).training_log.read_text()
    a, b = adapter(one), adapter(two)
    assert max(float(t.abs().max()) for n, t in a.items() if "lora_B" in n) > 1e-3  # training moved it
    assert max_diff(a, b) <= TOLERANCE, max_diff(a, b)
    assert losses(one) == pytest.approx(losses(two), rel=1e-5)
    assert len(losses(two, "eval_loss")) >= 2
    assert losses(one, "eval_loss") == pytest.approx(losses(two, "eval_loss"), rel=1e-5)
    rows = [read_json(Home(h).layer_activity)["modules"] for h in (one, two)]
    assert len(rows[0]) == len(rows[1]) == 14 and all(r["grad_norm"] for r in rows[1])
    for r1, r2 in zip(*rows):
        assert r1["name"] == r2["name"]
        assert r2["update_norm"] == pytest.approx(r1["update_norm"], rel=1e-4)
        assert r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)


def test_sharded_equals_ddp_with_packing_and_gradient_checkpointing(two_homes, tmp_path):
    ddp, fsdp = two_homes
    data = write_jsonl(tmp_path / "data.jsonl", chat_lines(40, seed=6))
    for h in (ddp, fsdp):  # packed rows of different lengths per rank; blocks recomputed in the backward
        write_config(h, packing=True, gradient_checkpointing=True, batch_size=2, max_grad_norm=0.0,
                     distributed=TWO)
    write_config(fsdp, distributed=FSDP)
    s1, s2 = train_once(ddp, data), train_once(fsdp, data)
    assert s1["steps"] == s2["steps"] > 1 and s1["examples"] == s2["examples"] == 40
    assert max_diff(adapter(ddp), adapter(fsdp)) <= TOLERANCE
    g1, g2 = losses(ddp, "grad_norm"), losses(fsdp, "grad_norm")
    assert g1 == pytest.approx(g2, rel=1e-4) and all(g > 0 for g in g2)


def test_sharded_resume_is_exact_and_ddp_cannot_continue_it(two_homes, tmp_path):
    full, part = two_homes
    job = stop_mid_way(full, part, tmp_path, FSDP)
    last = sorted(Home(part).job_checkpoints(job.id).glob("step-*/COMPLETE"))[-1].parent
    assert json.loads((last / "state.json").read_text())["strategy"] == "fsdp"

    write_config(part, distributed=TWO)  # the same process count, unsharded: refused, the reason says why
    reason = refused_reason(part, job)
    assert "distributed.strategy 'fsdp'" in reason and "'ddp'" in reason, reason

    write_config(part, distributed=FSDP)
    retry_to_the_end(part, job)
    assert max_diff(adapter(full), adapter(part)) <= 1e-6


def test_sharded_oom_restarts_from_the_checkpoint_with_half_the_micro_batch(two_homes, tmp_path, monkeypatch):
    small, oom = two_homes
    data = write_jsonl(tmp_path / "data.jsonl", chat_lines(24, seed=5))  # 3 steps of 2 ranks x 2 x 2 examples
    write_config(small, batch_size=2, save_steps=2, micro_batch_size=1, distributed=FSDP)
    write_config(oom, batch_size=2, save_steps=2, distributed=FSDP)
    train_once(small, data)
    monkeypatch.setenv("TRAININGD_OOM_AT", "step:3:above:1")  # step 3 does not fit 2 examples per forward
    summary = train_once(oom, data)
    assert summary["micro_batch_size"] == 1
    log = Home(oom).training_log.read_text()
    assert "out of memory at step 3 with sharded weights" in log and "resumed from" in log
    assert max_diff(adapter(small), adapter(oom)) <= TOLERANCE
