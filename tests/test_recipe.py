"""The training recipe in-process: loss accumulation, control at step boundaries, checkpoint refusal, QLoRA.

    .venv/bin/pytest tests/test_recipe.py -x -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import chat_lines, write_jsonl
from trainingd import exit_codes
from trainingd.config import parse_config
from trainingd.train import checkpoint as ckpt
from trainingd.train import batches, data
from trainingd.train.model import load_model
from trainingd.train.recipe import Recipe, RunSpec, execute, run

SMALL = dict(max_length=128, batch_size=2, gradient_accumulation=1, save_steps=2, learning_rate=1e-3,
             warmup_ratio=0.0)


def make_spec(tmp_path: Path, tiny_model: Path, dataset: Path, *, commands=None, **cfg) -> RunSpec:
    config = parse_config({**SMALL, "base_model": str(tiny_model), **cfg})
    out = tmp_path / "out"
    return RunSpec(dataset=dataset, base_model=tiny_model, output_dir=out, checkpoint_dir=out / "checkpoints",
                   cfg=config, job_id="job-1", progress_path=out / "progress.json",
                   metrics_path=out / "metrics.jsonl", commands=commands, cache_dir=tmp_path / "cache")


def progress_step(spec: RunSpec) -> int:
    try:
        return json.loads(spec.progress_path.read_text())["step"] or 0
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


class StopAfter:
    """A command source that answers ``action`` once the progress file reports ``steps`` optimizer steps."""

    def __init__(self, spec: RunSpec, steps: int, action: str = "stop"):
        self.spec, self.steps, self.act = spec, steps, action

    def __call__(self) -> str:
        return self.act if progress_step(self.spec) >= self.steps else "run"


def first_step(tmp_path: Path, tiny_model: Path, dataset: Path, **cfg) -> tuple[float, int, list, Recipe]:
    """Set a recipe up and run the real step of the loop (``Recipe._step``) on its first optimizer step."""
    recipe = Recipe(make_spec(tmp_path, tiny_model, dataset, **cfg))
    assert recipe.setup() is None
    recipe.cleanup()
    loss, n = recipe._step(recipe.plans[0][:recipe.cfg.gradient_accumulation])
    return loss, n, [p.grad.clone() for p in recipe.params], recipe


def test_two_forwards_of_two_in_a_step_equal_one_forward_of_four(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "d.jsonl", chat_lines(8, seed=3))
    l1, n1, g1, split = first_step(tmp_path / "split", tiny_model, ds, batch_size=4, micro_batch_size=2)
    l2, n2, g2, whole = first_step(tmp_path / "whole", tiny_model, ds, batch_size=4)
    rows = split.plans[0][0][0]
    assert rows == whole.plans[0][0][0] and len(rows) == 4
    assert len({split.lengths[i] for i in rows}) > 1  # different lengths: padding differs between the two layouts
    assert n1 == n2 > 0
    assert abs(l1 - l2) <= 1e-6
    assert max(float((a - b).abs().max()) for a, b in zip(g1, g2)) <= 1e-6
    # The loss is the per-token mean over the whole step, as the model's own forward computes it.
    full = batches.collate(split._rows(rows), split.tokenizer.pad_token_id)
    with torch.no_grad():
        ref = split.model(input_ids=full["input_ids"], labels=full["labels"], use_cache=False).loss
    assert abs(float(ref) - l1) <= 1e-5


def test_two_micro_batches_of_an_optimizer_step_equal_one_batch_of_their_examples(tiny_model, tmp_path):
    # gradient_accumulation 2 of batch 2 against batch 4: the same examples when the plan holds them alike.
    ds = write_jsonl(tmp_path / "d.jsonl", chat_lines(8, seed=3))
    l1, n1, g1, acc = first_step(tmp_path / "acc", tiny_model, ds, batch_size=2, gradient_accumulation=2)
    rows = [i for mb in acc.plans[0][:2] for i in mb[0]]
    assert len(rows) == 4
    full = batches.collate(acc._rows(rows), acc.tokenizer.pad_token_id)
    with torch.no_grad():
        ref = acc.model(input_ids=full["input_ids"], labels=full["labels"], use_cache=False).loss
    assert n1 == batches.num_trained_tokens(full) > 0
    assert abs(float(ref) - l1) <= 1e-5  # not the mean of the two micro-batches' means


def test_stop_writes_a_checkpoint_and_a_resume_with_other_data_or_settings_is_refused(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(12))
    spec = make_spec(tmp_path, tiny_model, ds)
    spec.commands = StopAfter(spec, 3)
    result = run(spec)
    assert result.exit_code == exit_codes.STOPPED, result
    newest = ckpt.latest_complete(spec.checkpoint_dir)
    assert newest is not None and newest.name == "step-000003"
    manifest = json.loads((newest / "manifest.json").read_text())
    assert manifest["job_id"] == "job-1" and manifest["data_sha256"] == data.file_sha256(ds)
    assert not (spec.output_dir / "adapter_model.safetensors").exists()  # nothing published on stop

    other = write_jsonl(tmp_path / "b.jsonl", chat_lines(12, seed=9))
    reason = tmp_path / "reason.json"
    assert execute(make_spec(tmp_path, tiny_model, other), reason) == exit_codes.CHECKPOINT_MISMATCH
    out = json.loads(reason.read_text())
    assert out["exit"] == "checkpoint_mismatch" and "data_sha256" in out["reason"]

    assert execute(make_spec(tmp_path, tiny_model, ds, lora={"r": 4}), reason) == exit_codes.CHECKPOINT_MISMATCH
    out = json.loads(reason.read_text())
    assert "'lora.r'" in out["reason"] and "step-000003" in out["reason"]
    assert ckpt.latest_complete(spec.checkpoint_dir) == newest  # a refusal never destroys the checkpoint


def test_skip_discards_checkpoints_and_leaves_the_published_adapter_alone(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(12))
    spec = make_spec(tmp_path, tiny_model, ds)
    spec.output_dir.mkdir(parents=True)
    (spec.output_dir / "adapter_model.safetensors").write_bytes(b"previous adapter")
    spec.commands = StopAfter(spec, 3, "skip")
    result = run(spec)
    assert result.exit_code == exit_codes.SKIPPED
    assert not spec.checkpoint_dir.exists()  # step 2's periodic checkpoint is gone too
    assert (spec.output_dir / "adapter_model.safetensors").read_bytes() == b"previous adapter"


def test_pause_holds_at_a_step_boundary_until_run(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(8))
    spec = make_spec(tmp_path, tiny_model, ds)
    seen: list[tuple[str, int | None]] = []
    pauses = iter(["pause", "pause", "pause"])

    def commands() -> str:
        progress = json.loads(spec.progress_path.read_text())
        seen.append((progress["status"], progress["step"]))
        return next(pauses, "run") if progress["step"] == 1 else "run"

    spec.commands = commands
    result = run(spec)
    assert result.exit_code == exit_codes.OK, result
    # While paused the progress file says so, at the step where it paused, and training then went on.
    assert ("paused", 1) in seen
    assert all(type(step) is int for _, step in seen if step is not None)  # JSON integers, not 1.0
    assert result.summary["steps"] == 4
    assert (spec.output_dir / "adapter_model.safetensors").exists()


def test_qlora_trains_on_cpu_and_changes_the_adapter(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(8))
    spec = make_spec(tmp_path, tiny_model, ds, use_qlora=True, lora={"r": 4, "alpha": 8})
    cfg = spec.cfg
    model = load_model(tiny_model, cfg, init_adapter=None, device=torch.device("cpu"), precision="fp32")
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    del model
    result = run(spec)
    assert result.exit_code == exit_codes.OK, result
    weights = load_file(spec.output_dir / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().max()) > 0 for v in lora_b)  # lora_B starts at zero: it trained
    assert result.summary["loss"] is not None
    state = json.loads((spec.output_dir / "adapter_state.json").read_text())
    assert state["locked"]["lora.r"] == 4 and state["trained"][0]["job_id"] == "job-1"
    assert state["generation"] == 1 and state["trained"][0]["generation"] == 1
    assert not spec.checkpoint_dir.exists()


def test_a_bad_file_is_a_data_error_with_a_reason(tiny_model, tmp_path):
    ds = tmp_path / "bad.jsonl"
    ds.write_text("this is not json\n{\"nothing\": 1}\n")
    reason = tmp_path / "reason.json"
    assert execute(make_spec(tmp_path, tiny_model, ds), reason) == exit_codes.DATA_ERROR
    out = json.loads(reason.read_text())
    assert out["exit"] == "data_error" and out["reason"] and isinstance(out["details"], list)
    assert out["details"]


@pytest.mark.parametrize("scheduler", ["cosine", "linear", "constant"])
def test_learning_rate_schedule_warms_up_then_follows_the_configured_shape(scheduler):
    from trainingd.train.optimizer import lr_lambda

    f = lr_lambda(parse_config({"lr_scheduler": scheduler, "warmup_ratio": 0.2}), 10)
    assert f(0) < f(1) < f(2) == 1.0
    if scheduler == "constant":
        assert f(9) == 1.0
    else:
        assert f(9) < f(5) < 1.0


def test_low_disk_pauses_at_a_step_boundary_and_a_stop_still_ends_it(tiny_model, tmp_path):
    ds = write_jsonl(tmp_path / "a.jsonl", chat_lines(8))
    spec = make_spec(tmp_path, tiny_model, ds, min_free_disk_gb=1e9)  # no disk has this much free
    seen: list[str] = []

    def commands() -> str:
        progress = json.loads(spec.progress_path.read_text())
        seen.append(f"{progress['status']}: {progress.get('status_detail')}")
        return "stop" if progress["status"] == "paused" else "run"

    spec.commands = commands
    result = run(spec)
    assert result.exit_code == exit_codes.STOPPED, result
    waiting = [s for s in seen if s.startswith("paused: low disk")]
    assert waiting and "min_free_disk_gb" in waiting[0], seen
    assert not (spec.output_dir / "adapter_model.safetensors").exists()  # nothing published while waiting
