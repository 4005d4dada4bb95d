"""Snapshots after each job, lineage, rollback, pruning and adapter rotation.

Run: .venv/bin/python -m pytest tests/test_snapshots.py -q      (``-m "not slow"`` leaves out real training)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import chat_lines, write_config, write_jsonl
from trainingd.lifecycle import snapshots as snapshots
from trainingd.contracts.status import StatusWriter, compose_status
from trainingd.instance import InstanceLock
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable


def drop(root: Path, name: str, lines: list) -> None:
    tmp = write_jsonl(root / "inbox" / f".{name}.tmp", lines)
    tmp.rename(root / "inbox" / name)


def run_daemon_once(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(REPO / "training_daemon.py"), "--home", str(root), "--once"], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


def trainingd(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "trainingd", "--home", str(root), *argv], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def fake_adapter(root: Path, content: bytes, trained: list[dict], generation: int) -> None:
    """Adapter files as a publish leaves them (the snapshot code copies bytes; it never loads them)."""
    cm = root / "current_model"
    cm.mkdir(parents=True, exist_ok=True)
    (cm / "adapter_config.json").write_text('{"r": 4}')
    (cm / "adapter_model.safetensors").write_bytes(content)
    (cm / "adapter_state.json").write_text(json.dumps({
        "base_model": "/b", "base_model_hash": "h", "locked": {}, "generation": generation,
        "generation_id": f"g{generation}", "trained": trained}))


@pytest.mark.slow
def test_each_job_is_snapshotted_with_lineage_and_a_rollback_restores_the_exact_weights(home):
    write_config(home, keep_snapshots=2)
    for i in range(3):
        drop(home, f"file{i}.jsonl", chat_lines(12, seed=i))
    res = run_daemon_once(home)
    assert res.returncode == 0, res.stderr
    h = Home.at(home)
    snaps = snapshots.list_snapshots(h)
    # Three jobs, keep_snapshots 2: the oldest is pruned.
    assert len(snaps) == 2, [s["name"] for s in snaps]
    first, second = snaps
    m = second["manifest"]
    assert m["trained_file"]["name"] == "file2.jsonl" and m["trained_file"]["lines"] == 12
    assert m["trained_file"]["trained_tokens"] > 0 and m["steps"] > 0 and m["final_loss"] > 0
    assert m["base_model_hash"] and m["config"]["keep_snapshots"] == 2 and m["code_version"]
    assert m["parent"] == first["name"]
    assert second["name"].endswith(m["trained_file"]["job_id"])
    # The snapshot holds exactly the live adapter of its generation.
    live = (home / "current_model" / "adapter_model.safetensors").read_bytes()
    assert (Path(second["path"]) / "adapter_model.safetensors").read_bytes() == live

    r = trainingd(home, "--json", "lineage")
    assert r.returncode == 0, r.stderr
    chain = json.loads(r.stdout)["chain"]
    assert [c["file"] for c in chain] == ["file0.jsonl", "file1.jsonl", "file2.jsonl"]
    assert chain[0]["snapshot"] is None and chain[2]["snapshot"] == second["name"]
    assert all(c["final_loss"] > 0 for c in chain)
    r = subprocess.run([PY, str(REPO / "training_controller.py"), "history", "--home", str(home)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "file1.jsonl" in r.stdout and "loss" in r.stdout

    r = trainingd(home, "rollback", first["name"])
    assert r.returncode == 0, r.stderr
    assert (home / "current_model" / "adapter_model.safetensors").read_bytes() == \
        (Path(first["path"]) / "adapter_model.safetensors").read_bytes()
    after = snapshots.list_snapshots(h)
    assert [s["name"] for s in after][:2] == [first["name"], second["name"]], "a rollback deletes nothing"
    backup = after[-1]
    assert backup["pinned"] and backup["manifest"]["reason"] == "rollback"
    assert (Path(backup["path"]) / "adapter_model.safetensors").read_bytes() == live
    state = json.loads((home / "current_model" / "adapter_state.json").read_text())
    assert state["restored_from"] == first["name"] and len(state["trained"]) == 2

    # Training goes on from the rolled-back adapter: the new snapshot's parent is the one restored.
    drop(home, "file3.jsonl", chat_lines(12, seed=3))
    res = run_daemon_once(home)
    assert res.returncode == 0, res.stderr
    newest = [s for s in snapshots.list_snapshots(h) if s["manifest"]["reason"] == "job"][-1]
    assert newest["manifest"]["trained_file"]["name"] == "file3.jsonl"
    assert newest["manifest"]["parent"] == first["name"]
    assert [t["file"] for t in newest["manifest"]["trained"]] == ["file0.jsonl", "file1.jsonl", "file3.jsonl"]
    assert any(s["name"] == backup["name"] for s in snapshots.list_snapshots(h)), "pinned backups are never pruned"


def test_pruning_keeps_the_newest_and_every_pinned_snapshot(tmp_path):
    h = Home.at(tmp_path)
    trained: list[dict] = []
    for g in range(1, 6):
        trained = trained + [{"job_id": f"j{g}", "sha256": f"s{g}", "file": f"f{g}", "generation": g}]
        fake_adapter(tmp_path, bytes([g]) * 10, trained, g)
        snapshots.take_snapshot(h, label=f"gen{g}")
    names = [s["name"] for s in snapshots.list_snapshots(h)]
    assert len(names) == 5
    snapshots.set_pinned(h, names[0], True)
    assert snapshots.prunable_snapshots(h, 2) == [Path(s) for s in
                                                   [h.snapshots / names[1], h.snapshots / names[2]]]
    removed = snapshots.prune_snapshots(h, 2)
    assert [p.name for p in removed] == names[1:3]
    left = snapshots.list_snapshots(h)
    assert [s["name"] for s in left] == [names[0], names[3], names[4]]
    assert left[-1]["manifest"]["parent"] == names[3]
    # The same generation is not snapshotted twice after a job (a restart completing a published job).
    assert snapshots.take_snapshot(h, reason="job", label="again") == h.snapshots / names[4]
    assert not any(p.name.startswith(".") for p in h.snapshots.iterdir())


def test_snapshots_taken_within_one_second_keep_their_order_and_pruning_keeps_the_newest(tmp_path, monkeypatch):
    """Fast jobs name snapshots ``<stamp>_<label>``, ``-2`` .. ``-12`` in one second: by name ``-10`` sorts before
    ``-2``, which pruned the newest and called an older one the parent. The manifest's ``sequence`` orders them."""
    h = Home.at(tmp_path)
    trained: list[dict] = []
    taken = []
    # Two written before sequences existed: they come first, their "-N" compared as a number.
    for n, suffix in ((1, ""), (2, "-2")):
        trained = trained + [{"job_id": f"j{n}", "sha256": f"s{n}", "file": f"f{n}", "generation": n}]
        fake_adapter(tmp_path, bytes([n]) * 10, trained, n)
        path = snapshots.take_snapshot(h, label="x")
        manifest = json.loads((path / "manifest.json").read_text())
        manifest.pop("sequence", None)
        old = path.with_name(f"20200101_000000_x{suffix}")
        path.rename(old)
        (old / "manifest.json").write_text(json.dumps({**manifest, "name": old.name}))
        taken.append(old.name)
    class OneSecond(datetime):  # fast jobs on any machine: every snapshot below is named in the same second
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=tz)

    monkeypatch.setattr(snapshots, "datetime", OneSecond)
    for g in range(3, 15):
        trained = trained + [{"job_id": f"j{g}", "sha256": f"s{g}", "file": f"f{g}", "generation": g}]
        fake_adapter(tmp_path, bytes([g]) * 10, trained, g)
        taken.append(snapshots.take_snapshot(h, label="same").name)
    assert taken[2] == "20260102_030405_same" and taken[-1] == "20260102_030405_same-12"
    assert sorted(taken) != taken
    listed = snapshots.list_snapshots(h)
    assert [s["name"] for s in listed] == taken
    assert [s["manifest"]["parent"] for s in listed[2:]] == taken[1:-1]
    removed = snapshots.prune_snapshots(h, 3)
    assert [s["name"] for s in snapshots.list_snapshots(h)] == taken[-3:]
    assert [p.name for p in removed] == taken[:-3]


def test_rollback_and_adapter_new_are_refused_while_the_daemon_runs_unpaused(tmp_path):
    h = Home.at(tmp_path)
    fake_adapter(tmp_path, b"one", [{"job_id": "j1", "sha256": "s1"}], 1)
    snap = snapshots.take_snapshot(h, label="one")
    fake_adapter(tmp_path, b"two", [{"job_id": "j1", "sha256": "s1"}, {"job_id": "j2", "sha256": "s2"}], 2)
    lock = InstanceLock(h)
    assert lock.acquire()
    try:
        StatusWriter(h).write(compose_status(daemon={"pid": os.getpid()}, status="idle", status_detail=None,
                                             control={"paused": False}))
        for argv in (["rollback", snap.name], ["adapter", "new"]):
            r = trainingd(tmp_path, *argv)
            assert r.returncode == 1 and "pause it first" in r.stderr, r.stderr
        assert (tmp_path / "current_model" / "adapter_model.safetensors").read_bytes() == b"two"
        StatusWriter(h).write(compose_status(daemon={"pid": os.getpid()}, status="paused", status_detail=None,
                                             control={"paused": True}))
        r = trainingd(tmp_path, "rollback", snap.name)
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "current_model" / "adapter_model.safetensors").read_bytes() == b"one"
    finally:
        lock.release()


def test_adapter_new_archives_the_adapter_as_a_pinned_snapshot_and_empties_current_model(tmp_path):
    h = Home.at(tmp_path)
    fake_adapter(tmp_path, b"weights", [{"job_id": "j1", "sha256": "s1"}], 1)
    (tmp_path / "current_model" / "checkpoints" / "j9").mkdir(parents=True)
    r = trainingd(tmp_path, "--json", "adapter", "new", "--keep-as", "before r8")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["archived"].endswith("_before-r8")
    snap = h.snapshots / out["archived"]
    assert (snap / "adapter_model.safetensors").read_bytes() == b"weights" and (snap / "PINNED").exists()
    assert list((tmp_path / "current_model").iterdir()) == []
    r = trainingd(tmp_path, "lineage")
    assert r.returncode == 0 and "no adapter yet" in r.stdout
