"""Exactly-once across the model's life (invariant 11): dedupe and the checkers follow the lineage.

A file trained into any ancestor of the live model (its adapter, a consolidated base below it) is a duplicate unless
forced; a file only in a rolled-back-from or archived adapter is trained again; a consolidated, rolled-back or
rotated home checks healthy.

Run: .venv/bin/python -m pytest tests/test_lineage_dedupe.py -q   (the consolidation test is slow)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import chat_lines, write_jsonl
from trainingd.checks.invariants import check_home
from trainingd.jobqueue import JobQueue
from trainingd.lifecycle.ancestry import ever_trained_ids, find_trained
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def cli(script: str, root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / script), "--home", str(root), *argv], capture_output=True, text=True,
                          env=ENV, timeout=600)


def done_job(h: Home, name: str, seed: int):
    """A job in done/ as the daemon leaves it after training ``name``."""
    q = JobQueue(h)
    q.ensure_dirs()
    src = write_jsonl(h.root / "src" / name, chat_lines(4, seed=seed))
    q.add(src, source="cli")
    job = q.claim_next()
    return q.complete(job, result={"steps": 1})


def entry(job) -> dict:
    return {"job_id": job.id, "sha256": job.meta["sha256"], "file": job.meta["original_name"], "steps": 1}


def write_state(h: Home, trained: list[dict], base: str = "/b") -> None:
    h.current_model.mkdir(parents=True, exist_ok=True)
    (h.current_model / "adapter_state.json").write_text(json.dumps(
        {"base_model": base, "base_model_hash": "h", "locked": {}, "generation": len(trained),
         "generation_id": f"g{len(trained)}", "trained": trained}))


def write_snapshot(h: Home, name: str, trained: list[dict], reason: str = "job") -> None:
    folder = h.snapshots / name
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"name": name, "reason": reason, "trained": trained}))


def test_after_a_rollback_files_trained_after_the_snapshot_are_trained_again_and_the_home_checks_healthy(tmp_path):
    h = Home.at(tmp_path)
    one, two = done_job(h, "one.jsonl", 1), done_job(h, "two.jsonl", 2)
    write_snapshot(h, "20261206_000001_000001-one", [entry(one)])
    write_snapshot(h, "20261206_000002_000002-two", [entry(one), entry(two)])
    write_state(h, [entry(one)])  # rolled back to the first snapshot
    problems = [p for p in check_home(h, require_status=False)]
    assert problems == [], problems
    assert find_trained(h, one.meta["sha256"])["job_id"] == one.id
    assert find_trained(h, two.meta["sha256"]) is None, "two.jsonl is no longer in the model: trained again"


def test_after_adapter_new_the_archived_adapters_files_are_trained_again_and_the_home_checks_healthy(tmp_path):
    h = Home.at(tmp_path)
    one = done_job(h, "one.jsonl", 1)
    write_snapshot(h, "20261206_000002_archived", [entry(one)], reason="adapter_new")
    h.current_model.mkdir(parents=True)  # `adapter new` left it empty
    assert check_home(h, require_status=False) == []
    assert one.id in ever_trained_ids(h)
    assert find_trained(h, one.meta["sha256"]) is None


def test_a_file_merged_into_any_consolidated_base_below_the_live_one_is_a_duplicate(tmp_path):
    h = Home.at(tmp_path)
    one, two = done_job(h, "one.jsonl", 1), done_job(h, "two.jsonl", 2)
    first, second = h.consolidated_models / "20261206_000001", h.consolidated_models / "20261206_000002"
    for folder, parent, trained in ((first, tmp_path / "plain", [entry(one)]), (second, first, [entry(two)])):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "manifest.json").write_text(json.dumps({"name": folder.name, "files_trained": trained,
                                                          "parent_base": {"path": str(parent), "hash": "x"}}))
    (tmp_path / "config.json").write_text(json.dumps({"base_model": "consolidated_models/20261206_000002"}))
    h.current_model.mkdir(parents=True)
    assert check_home(h, require_status=False) == []
    hit = find_trained(h, one.meta["sha256"])
    assert hit["job_id"] == one.id and hit["where"] == "consolidated base 20261206_000001"
    assert find_trained(h, two.meta["sha256"])["where"] == "consolidated base 20261206_000002"
    # The same content trained once more into the fresh adapter (unforced) breaks invariant 11.
    write_state(h, [{**entry(one), "job_id": "000009-one"}], base=str(second))
    assert any("trained 2 times into the live model" in p for p in check_home(h, require_status=False))


@pytest.mark.slow
def test_a_consolidated_home_checks_healthy_and_refuses_to_train_a_merged_file_again(home):
    data = write_jsonl(home / "src" / "first.jsonl", chat_lines(16, seed=1))
    assert cli("training_queue.py", home, "add", str(data)).returncode == 0
    r = cli("training_daemon.py", home, "--once")
    assert r.returncode == 0, r.stderr
    r = cli("consolidate_model.py", home, "--description", "first file", "--yes")
    assert r.returncode == 0, r.stderr
    h = Home.at(home)
    assert check_home(h, require_status=False) == []
    for script, argv in (("state_tracker.py", ["--check"]), ("comprehensive_health_check.py", [])):
        r = cli(script, home, *argv)
        assert r.returncode == 0, (script, r.stdout, r.stderr)

    r = cli("training_queue.py", home, "--json", "add", str(data))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["duplicate_of"]["job_id"] == "000001-first" and "consolidated base" in out["duplicate_of"]["where"]
    r = cli("training_daemon.py", home, "--once")
    assert r.returncode == 0, r.stderr
    meta = json.loads((h.done / out["job"]["id"] / "job.json").read_text())
    assert meta["duplicate_of"] == "000001-first"
    assert not (h.current_model / "adapter_model.safetensors").exists(), "nothing was trained into the new adapter"
    assert check_home(h, require_status=False) == []
