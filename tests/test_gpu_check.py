"""``bench/gpu_check.sh --tiny`` runs the GPU check's code paths end to end on this CPU, so it cannot rot before a
GPU comes.

    .venv/bin/python -m pytest tests/test_gpu_check.py -x -q
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import PYTHON, REPO

pytestmark = pytest.mark.slow


def test_gpu_check_tiny_passes_its_correctness_rows_and_runs_every_speed_row(tmp_path):
    env = {**os.environ, "PYTHON": PYTHON, "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--tiny"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    table = (tmp_path / "gpu_check.txt").read_text()
    checks = {c["check"]: c for c in report["correctness"]}
    assert len(checks) == 5 and all(c["ok"] for c in checks.values()), table
    resume = next(c for name, c in checks.items() if "resume" in name)
    assert resume["raw"]["max_diff"] == 0.0
    oom = next(c for name, c in checks.items() if "out-of-memory" in name)
    assert oom["raw"]["micro_batch_size"] < 4  # halved from the batch of 4
    rows = report["speed"]["rows"]
    # SYLLO and the long set, QLoRA and bf16 LoRA, trainingd and TRL (one variant with --tiny): every one measured.
    assert len(rows) == 8 and all(r.get("tokens_per_s") for r in rows), table
    assert {r["who"] for r in rows} == {"trainingd", "TRL bf16, no ckpt, group_by_length"}
    assert table.count("ratio ") == 4

