"""A short soak in the suite: the real daemon, monitor and generator for a minute, many small jobs through the
stand-in trainer, controller commands and a polling monitor client; what a process holds stays bounded.

The long run and its figures: ``bench/soak.py --minutes 60`` (docs/soak.png). Flatness is asserted loosely (bounded
growth after warm-up), never timings.

Run: .venv/bin/python -m pytest tests/test_soak.py -q
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from soak import run_soak  # noqa: E402

from trainingd.checks.invariants import check_home  # noqa: E402
from trainingd.paths import Home  # noqa: E402


@pytest.mark.slow
def test_a_minute_of_soak_keeps_memory_descriptors_and_home_bounded_and_every_job_done_once(tmp_path):
    doc = run_soak(60, tmp_path, sample_s=3.0, segment_size=8)
    assert doc["errors"] == {"monitor": 0, "controller": 0}, doc["last_error"]
    assert doc["jobs_done"] >= 10, doc["jobs_done"]
    s = doc["summary"]
    for name in ("daemon", "monitor", "generator"):
        assert s[f"{name}.rss_mib"]["change"] < 15, (name, s[f"{name}.rss_mib"])
        assert s[f"{name}.fds"]["change"] <= 3, (name, s[f"{name}.fds"])
        assert s[f"{name}.threads"]["change"] <= 3, (name, s[f"{name}.threads"])
    # Outside queue/done/ the home holds a bounded set of files (snapshots pruned, checkpoints removed) ...
    assert s["rest_files"]["max"] - s["rest_files"]["after_warmup"] <= 30, s["rest_files"]
    # ... and grows only by its records (logs, history, the sealed trained list); a done job keeps its job.json
    # (+ result) once its data is cleaned. The rest -- snapshots, the adapter's state -- stays level: a full copy of
    # the trained list in each of them was ~2 KB per job.
    assert s["records_bytes_per_job"] < 20_000, s["records_bytes_per_job"]
    assert s["rest_bytes_per_job"] < 1_000, s["rest_bytes_per_job"]
    assert s["done_files_per_job"] <= 3, s["done_files_per_job"]
    problems = [p for p in check_home(Home.at(tmp_path / "home"), require_status=False)
                if "still in processing/" not in p]  # stopped by SIGTERM mid-job: it resumes at the next start
    assert problems == [], problems
