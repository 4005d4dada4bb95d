"""``trainingd clean``: the dry run lists exactly what clean then removes, and nothing protected.

Run: .venv/bin/python -m pytest tests/test_clean.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import chat_lines, write_config, write_jsonl
from trainingd.lifecycle import snapshots as snapshots
from trainingd.instance import init_home
from trainingd.jobqueue import JobQueue
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
OLD = time.time() - 40 * 86400


def trainingd(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "trainingd", "--home", str(root), "--json", *argv], capture_output=True,
                          text=True, cwd=REPO, timeout=120)


def job(q: JobQueue, tmp: Path, name: str, seed: int):
    return q.add(write_jsonl(tmp / name, chat_lines(3, seed=seed)))


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_clean_dry_run_lists_exactly_what_clean_removes_and_nothing_protected(home, tmp_path):
    write_config(home, keep_snapshots=1, retention={"keep_done_days": 30, "log_retention_days": 30})
    h = Home.at(home)
    init_home(h)
    q = JobQueue(h)
    src = tmp_path / "src"
    # done long ago, done recently, failed, running, pending
    old_done, new_done, failed, running = (job(q, src, f"{n}.jsonl", i) for i, n in
                                           enumerate(["old", "new", "bad", "run"]))
    pending = job(q, src, "wait.jsonl", 9)
    for j in (old_done, new_done, failed, running):
        assert q.claim_next().id == j.id
        if j is failed:
            q.fail(j, "broken")
        elif j is not running:
            q.complete(j, result={"loss": 1.0})
    meta = json.loads((h.done / old_done.id / "job.json").read_text())
    meta["finished_at"] = "2020-01-01T00:00:00+00:00"
    (h.done / old_done.id / "job.json").write_text(json.dumps(meta))
    # checkpoints of a done and of the running job
    for j in (new_done, running):
        (h.job_checkpoints(j.id) / "step-000002").mkdir(parents=True)
        (h.job_checkpoints(j.id) / "step-000002" / "adapter_model.safetensors").write_bytes(b"x" * 100)
    # the live adapter and three snapshots, one pinned (keep_snapshots 1)
    cm = h.current_model
    (cm / "adapter_config.json").write_text("{}")
    (cm / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (cm / "adapter_state.json").write_text(json.dumps({"trained": [], "generation": 1}))
    for label in ("a", "b", "c"):
        snapshots.take_snapshot(h, label=label, pin=False)
    pinned_name = snapshots.list_snapshots(h)[0]["name"]
    snapshots.set_pinned(h, pinned_name, True)
    # logs: a rotated old one, a rotated recent one, today's
    old_log = h.logs / "daemon.2020-01-01.log"
    old_log.write_text("old\n")
    os.utime(old_log, (OLD, OLD))
    (h.logs / "daemon.2099-01-01.log").write_text("recent\n")
    old_daily = h.logs / "daemon_20200102.log"
    old_daily.write_text("old\n")
    os.utime(old_daily, (OLD, OLD))
    # today's file, old by its time stamp but the one daemon.log points at: kept
    today = h.logs / "daemon_20991231.log"
    today.write_text("today\n")
    os.utime(today, (OLD, OLD))
    h.daemon_log.symlink_to(today.name)
    # tokenized caches: of the pending job's file and of a finished file
    for name, sha in (("live", pending.meta["sha256"]), ("gone", new_done.meta["sha256"])):
        (h.cache / name).mkdir(parents=True)
        (h.cache / name / "report.json").write_text(json.dumps({"sha256": sha}))
        (h.cache / name / "train.arrow").write_bytes(b"a" * 50)

    before = files_under(home)
    r = trainingd(home, "clean", "--dry-run")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert files_under(home) == before, "a dry run removes nothing"
    paths = {Path(it["path"]).relative_to(home).as_posix() for it in listed["items"]}
    snaps = [s["name"] for s in snapshots.list_snapshots(h)]
    assert paths == {f"current_model/checkpoints/{new_done.id}", f"snapshots/{snaps[1]}",
                     "logs/daemon.2020-01-01.log", "logs/daemon_20200102.log", "cache/gone",
                     f"queue/done/{old_done.id}/old.jsonl"}
    assert listed["bytes_freed"] > 0

    r = trainingd(home, "clean")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert [it["path"] for it in done["items"]] == [it["path"] for it in listed["items"]]
    assert done["bytes_freed"] == listed["bytes_freed"]
    removed = before - files_under(home)
    assert {p for p in removed if not any(p.startswith(x) for x in paths)} == set(), "only what was listed"
    assert all(not (home / p).exists() for p in paths)
    # protected: the base, the live adapter, pending and running jobs and their checkpoints, failed/, job.json
    assert (home / "models" / "tiny-qwen3" / "config.json").exists()
    assert (cm / "adapter_model.safetensors").exists()
    assert pending.data_file.exists() and q.get(running.id).data_file.exists()
    assert (h.job_checkpoints(running.id) / "step-000002").exists()
    assert q.get(failed.id).data_file.exists()
    assert (h.done / old_done.id / "job.json").exists()
    assert (h.snapshots / pinned_name).exists() and (h.snapshots / snaps[2]).exists()
    assert (h.cache / "live" / "train.arrow").exists() and h.daemon_log.exists()
    r = trainingd(home, "clean", "--dry-run")
    assert json.loads(r.stdout)["items"] == []


def test_too_little_free_disk_holds_the_daemon_with_a_clear_status_and_fails_nothing(home):
    write_config(home, min_free_disk_gb=1e9)
    tmp = write_jsonl(home / "inbox" / ".a.tmp", chat_lines(3))
    tmp.rename(home / "inbox" / "a.jsonl")
    r = subprocess.run([PY, str(REPO / "training_daemon.py"), "--home", str(home), "--once"], capture_output=True,
                       text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert r.returncode == 3
    st = json.loads((home / "status" / "training_status.json").read_text())
    assert st["condition"]["kind"] == "low_disk" and "min_free_disk_gb" in st["condition"]["message"]
    assert st["queue"]["failed"] == 0 and st["queue"]["done"] == 0


def test_clean_retires_rejected_candidates_beyond_a_lowered_keep_rejected_and_says_so_in_their_jobs(home, tmp_path):
    """The daemon prunes rejected candidates after each rejection; a keep_rejected lowered later takes effect at
    the next clean, oldest first, each job's job.json recording where its candidate went (as the daemon does)."""
    write_config(home, keep_rejected=1)
    h = Home.at(home)
    init_home(h)
    q = JobQueue(h)
    jobs = [job(q, tmp_path / "src", f"r{i}.jsonl", i) for i in range(3)]
    for j in jobs:
        q.claim_next()
        q.complete(j, result={"loss": 1.0})
    cm = h.current_model
    (cm / "adapter_config.json").write_text("{}")
    (cm / "adapter_model.safetensors").write_bytes(b"w" * 100)
    (cm / "adapter_state.json").write_text(json.dumps({"trained": [], "generation": 1}))
    names = []
    for j in jobs:
        path = snapshots.take_snapshot(h, reason="rejected", label=f"{j.id}-rejected")
        manifest = json.loads((path / "manifest.json").read_text())
        (path / "manifest.json").write_text(json.dumps({**manifest, "trained_file": {"job_id": j.id}}))
        names.append(path.name)
    (h.snapshots / names[0] / "PINNED").write_text("manual\n")  # pinned by hand: never pruned

    r = trainingd(home, "clean", "--dry-run")
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)["items"]
    assert [(Path(it["path"]).name, it["kind"]) for it in listed] == \
        [(names[1], "rejected candidate beyond keep_rejected")]
    r = trainingd(home, "clean")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in h.snapshots.iterdir()) == [names[0], names[2]]
    marked = json.loads((h.done / jobs[1].id / "job.json").read_text())
    assert marked["gate_snapshot_pruned"]["name"] == names[1]
    assert "gate_snapshot_pruned" not in json.loads((h.done / jobs[2].id / "job.json").read_text())
