"""Per-LoRA-module activity: norms from the small factors, the trainer's report, and ``lora_monitor.py``.

    .venv/bin/pytest tests/test_layer_stats.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, chat_lines, write_jsonl
from trainingd import exit_codes
from trainingd.config import parse_config
from trainingd.contracts import layer_activity, status
from trainingd.train.layer_stats import LayerStats, lora_modules
from trainingd.train.model import load_model
from trainingd.train.recipe import Recipe, RunSpec, run

SMALL = dict(max_length=128, batch_size=2, gradient_accumulation=2, save_steps=50, learning_rate=1e-3,
             warmup_ratio=0.0, layer_stats_steps=1)


def tiny_peft(tiny_model: Path, **lora):
    cfg = parse_config({**SMALL, "base_model": str(tiny_model), "lora": {"r": 4, "alpha": 8, **lora}})
    torch.manual_seed(0)
    return load_model(tiny_model, cfg, init_adapter=None, device=torch.device("cpu"), precision="fp32"), cfg


def dense_update(m) -> torch.Tensor:
    return m.scaling["default"] * m.lora_B["default"].weight.detach() @ m.lora_A["default"].weight.detach()


def randomize_b(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, m in lora_modules(model):
            w = m.lora_B["default"].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.05)


def relative_error(got: float, want: float) -> float:
    return abs(got - want) / max(abs(want), 1e-30)


def test_update_and_delta_norms_equal_the_dense_products_on_a_real_peft_model(tiny_model):
    model, _ = tiny_peft(tiny_model, alpha=12)  # scaling 3: a scaling bug shows
    modules = lora_modules(model)
    assert len(modules) == 2 * 7 and {m.scaling["default"] for _, m in modules} == {3.0}
    randomize_b(model, seed=1)
    stats = LayerStats(model, None, "job")
    before = {name: dense_update(m) for name, m in modules}
    randomize_b(model, seed=2)
    with torch.no_grad():
        for _, m in modules:
            m.lora_A["default"].weight.mul_(1.5)
    doc = stats.report(step=3)
    rows = {r["name"]: r for r in doc["modules"]}
    assert list(rows) == [name for name, _ in modules] and doc["previous_step"] == 0 and doc["step"] == 3
    for name, m in modules:
        after = dense_update(m)
        assert relative_error(rows[name]["update_norm"], float(torch.linalg.norm(after))) <= 1e-5
        assert relative_error(rows[name]["delta_norm"], float(torch.linalg.norm(after - before[name]))) <= 1e-5
        assert rows[name]["module"] == name.rsplit(".", 1)[-1] and rows[name]["layer"] in (0, 1)
    assert stats.report(step=4)["modules"][0]["delta_norm"] == pytest.approx(0.0, abs=1e-9)  # nothing moved
    # A step a millionth of the weights' size is measured as exactly as a large one (float64 reference).
    before = {name: m.scaling["default"] * m.lora_B["default"].weight.double() @ m.lora_A["default"].weight.double()
              for name, m in modules}
    with torch.no_grad():
        for _, m in modules:
            m.lora_B["default"].weight.mul_(1 + 1e-6 * torch.randn_like(m.lora_B["default"].weight).sign())
    rows = {r["name"]: r for r in stats.report(step=5)["modules"]}
    for name, m in modules:
        exact = float(torch.linalg.norm(m.scaling["default"] * m.lora_B["default"].weight.double()
                                        @ m.lora_A["default"].weight.double() - before[name]))
        assert exact > 0 and relative_error(rows[name]["delta_norm"], exact) <= 1e-4


def test_gradient_norms_are_those_of_the_accumulated_lora_gradients(tiny_model, tmp_path):
    out = tmp_path / "out"
    recipe = Recipe(RunSpec(dataset=write_jsonl(tmp_path / "d.jsonl", chat_lines(4, seed=5)), base_model=tiny_model,
                            output_dir=out, checkpoint_dir=out / "checkpoints", job_id="job",
                            cfg=parse_config({**SMALL, "base_model": str(tiny_model), "lora": {"r": 4, "alpha": 8}}),
                            cache_dir=tmp_path / "cache"))
    assert recipe.setup() is None
    recipe.cleanup()
    model = recipe.model
    randomize_b(model, seed=3)  # lora_A's gradient is zero while B is
    recipe._step(recipe.plans[0][:2])  # the loop's own step: two micro-batches of two
    stats = LayerStats(model, None, "job")
    stats.grads()
    doc = stats.report(step=1)
    assert len(doc["modules"]) == len(lora_modules(model)) > 0
    for row, (_, m) in zip(doc["modules"], lora_modules(model)):
        a, b = m.lora_A["default"].weight.grad, m.lora_B["default"].weight.grad
        want = float(torch.linalg.norm(torch.cat([a.flatten(), b.flatten()])))
        assert want > 0 and relative_error(row["grad_norm"], want) <= 1e-5
    assert all(r["grad_norm"] is None for r in stats.report(step=2)["modules"])  # no stale gradients


def train(tmp_path: Path, tiny_model: Path, name: str, *, init_adapter: Path | None = None, seed: int = 0,
          **cfg) -> RunSpec:
    out = tmp_path / name
    spec = RunSpec(dataset=write_jsonl(tmp_path / f"{name}.jsonl", chat_lines(8, seed=seed)), base_model=tiny_model,
                   output_dir=out, checkpoint_dir=out / "checkpoints",
                   cfg=parse_config({**SMALL, "base_model": str(tiny_model), "lora": {"r": 4, "alpha": 8}, **cfg}),
                   job_id=name, init_adapter=init_adapter, progress_path=out / "progress.json",
                   metrics_path=out / "metrics.jsonl", layer_activity_path=out / layer_activity.FILE,
                   cache_dir=tmp_path / "cache")
    result = run(spec)
    assert result.exit_code == exit_codes.OK, result
    return spec


def monitor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "lora_monitor.py"), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_training_reports_every_module_and_lora_monitor_reads_the_saved_adapters(tiny_model, tmp_path):
    first = train(tmp_path, tiny_model, "first")
    doc = layer_activity.read_layer_activity(first.layer_activity_path)
    assert doc is not None and doc["job_id"] == "first" and doc["step"] == 2 and doc["previous_step"] == 1
    assert len(doc["modules"]) == 14 and {r["module"] for r in doc["modules"]} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert all(r["update_norm"] > 0 and r["delta_norm"] > 0 and r["grad_norm"] > 0 for r in doc["modules"])
    # The modules' gradient norms make up the step's total (pre-clipping) gradient norm.
    last = [json.loads(line) for line in first.metrics_path.read_text().splitlines()
            if '"loss"' in line][-1]
    total = sum(r["grad_norm"] ** 2 for r in doc["modules"]) ** 0.5
    assert last["step"] == 2 and relative_error(total, last["grad_norm"]) <= 1e-4
    # The short form travels through the trainer's progress into the daemon's status.
    progress = json.loads(first.progress_path.read_text())
    short = progress["layer_activity_summary"]
    assert short["step"] == 2 and short["modules"] == 14 and len(short["top"]) == layer_activity.TOP_K
    assert short["top"][0]["delta_norm"] == max(r["delta_norm"] for r in doc["modules"])
    composed = status.compose_status(daemon={"pid": 1}, status="training", job={"id": "first"}, progress=progress)
    assert composed["layer_activity_summary"] == short

    # Offline: the published adapter gives the same update norms the trainer reported after its last step.
    saved = monitor("--adapter", str(first.output_dir), "--json")
    assert saved.returncode == 0, saved.stderr
    offline = json.loads(saved.stdout)
    assert [r["name"] for r in offline["modules"]] == [r["name"] for r in doc["modules"]]
    for got, want in zip(offline["modules"], doc["modules"]):
        assert relative_error(got["update_norm"], want["update_norm"]) <= 1e-5
    table = monitor("--adapter", str(first.output_dir))
    assert table.returncode == 0 and all(r["name"] in table.stdout for r in doc["modules"])

    second = train(tmp_path, tiny_model, "second", init_adapter=first.output_dir, seed=1, layer_stats_steps=10)
    changed = json.loads(monitor("--adapter", str(second.output_dir), "--compare", str(first.output_dir),
                                 "--json").stdout)
    assert len(changed["modules"]) == 14 and all(r["delta_norm"] > 0 for r in changed["modules"])
    same = json.loads(monitor("--adapter", str(first.output_dir), "--compare", str(first.output_dir),
                              "--json").stdout)
    assert all(r["delta_norm"] == pytest.approx(0.0, abs=1e-9) for r in same["modules"])
    assert "delta_norm" in monitor("--adapter", str(second.output_dir), "--compare", str(first.output_dir)).stdout
    # layer_stats_steps=10 on a 2-step file: still one report, after the last step, measured from the start.
    report = layer_activity.read_layer_activity(second.layer_activity_path)
    assert report["step"] == 2 and report["previous_step"] == 0


def test_layer_stats_steps_zero_writes_no_report(tiny_model, tmp_path):
    spec = train(tmp_path, tiny_model, "off", layer_stats_steps=0)
    assert not spec.layer_activity_path.exists()
    assert json.loads(spec.progress_path.read_text())["layer_activity_summary"] is None


def test_lora_monitor_says_when_there_is_no_adapter(tmp_path):
    out = monitor("--adapter", str(tmp_path))
    assert out.returncode == exit_codes.ERROR and "no adapter" in out.stdout


def test_tensorboard_events_hold_the_training_scalars_and_the_layer_norms(tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    spec = RunSpec(dataset=write_jsonl(tmp_path / "tb.jsonl", chat_lines(8)), base_model=tiny_model, output_dir=out,
                   checkpoint_dir=out / "checkpoints",
                   cfg=parse_config({**SMALL, "base_model": str(tiny_model), "lora": {"r": 4, "alpha": 8},
                                     "tensorboard": True}),
                   job_id="tb", progress_path=out / "progress.json", metrics_path=out / "metrics.jsonl",
                   tensorboard_dir=out / "tensorboard" / "tb", cache_dir=tmp_path / "cache")
    assert run(spec).exit_code == exit_codes.OK
    events = EventAccumulator(str(spec.tensorboard_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    metrics = [json.loads(line) for line in spec.metrics_path.read_text().splitlines() if '"loss"' in line]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([m["loss"] for m in metrics])
    q = "update_norm/model.layers.1.self_attn.q_proj"
    assert q in tags and events.Scalars(q)[-1].value > 0
    assert len([t for t in tags if t.startswith("delta_norm/")]) == 14
