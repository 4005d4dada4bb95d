"""The trained list of a long-lived adapter: sealed segments, linked by snapshots, read back whole.

Run: .venv/bin/python -m pytest tests/test_trained_segments.py -q

The list of jobs in the adapter grows with every job; ``adapter_state.json`` keeps only the newest
``SEGMENT_SIZE`` and seals the rest into immutable ``current_model/trained/<sha256>.json`` files that snapshots
hard-link. These tests use a segment of 4 entries (in-process, and through the real daemon with the stand-in
trainer) so that a few jobs seal several segments.
"""

from __future__ import annotations

import json
import os

import pytest

from faults.fault_helpers import drop, run_daemon, stand_in_home
from trainingd.checks.invariants import check_home
from trainingd.contracts import adapter_state as st
from trainingd.lifecycle import snapshots
from trainingd.lifecycle.ancestry import ever_trained_ids, find_trained
from trainingd.paths import Home


def publish(home: Home, job: str) -> dict:
    """One publish as the trainer does it: the next state over the live one, written last."""
    cm = home.current_model
    cm.mkdir(parents=True, exist_ok=True)
    (cm / "adapter_config.json").write_text('{"r": 4}')
    (cm / "adapter_model.safetensors").write_bytes(job.encode())
    new = st.next_state(st.read_adapter_state(cm), entry={"job_id": job, "sha256": f"sha-{job}", "file": job},
                        base_model="/b", base_model_hash="h", locked={}, model_name="m")
    return st.write_adapter_state(cm, new)


def test_a_long_list_is_sealed_read_back_whole_and_linked_not_copied_by_snapshots(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "SEGMENT_SIZE", 4)
    home = Home.at(tmp_path / "home")
    jobs = [f"job{i:02d}" for i in range(11)]
    for i, job in enumerate(jobs, 1):
        written = publish(home, job)
        on_disk = st.read_adapter_state(home.current_model)
        assert on_disk == written and 1 <= len(on_disk["trained"]) <= 4, "the file holds only the newest jobs"
        assert on_disk["trained"][-1]["job_id"] == job, "the job published last stays in the tail"
        assert [t["job_id"] for t in st.trained_entries(on_disk, home.current_model)] == jobs[:i]
        assert st.trained_count(on_disk) == i
        snapshots.take_snapshot(home, reason="job")
        snapshots.prune_snapshots(home, 3)
    state = st.read_adapter_state(home.current_model)
    assert len(st.segment_names(state)) == 2 and len(state["trained"]) == 3
    with pytest.raises(ValueError, match="pass the folder"):
        st.trained_entries(state)
    # A republish after a crash (the same job again) does not list it twice.
    again = st.next_state(state, entry={"job_id": "job10", "sha256": "sha-job10", "file": "job10"},
                          base_model="/b", base_model_hash="h", locked={}, model_name="m")
    assert st.trained_count(again) == 11 and [t["job_id"] for t in again["trained"]].count("job10") == 1

    # Snapshots: small manifests, the segments hard-linked (one inode), each parent found from digests alone.
    # Oldest first by what they hold: names of snapshots taken within one second do not sort in time order.
    snaps = sorted(snapshots.list_snapshots(home), key=lambda s: s["manifest"]["trained_count"])
    assert len(snaps) == 3
    for s in snaps:
        m = s["manifest"]
        assert len(m["trained"]) <= 4 and m["trained_count"] == len(st.trained_entries(m, s["path"]))
        for name in st.segment_names(m):
            assert os.stat(st.segment_path(s["path"], name)).st_ino == \
                os.stat(st.segment_path(home.current_model, name)).st_ino
    assert [s["manifest"]["parent"] for s in snaps[1:]] == [s["name"] for s in snaps[:-1]]
    assert ever_trained_ids(home) == set(jobs)
    assert find_trained(home, "sha-job01")["where"] == "adapter", "dedupe reads the sealed segments"

    # A rollback to the oldest kept snapshot restores its list (its segments come along); nothing is lost.
    oldest = snaps[0]
    assert snapshots.rollback(home, oldest["name"])["restored"] == oldest["name"]
    restored = st.read_adapter_state(home.current_model)
    assert [t["job_id"] for t in st.trained_entries(restored, home.current_model)] == \
        jobs[:oldest["manifest"]["trained_count"]]

    # A segment changed by hand is refused with a reason, never read as a shorter list.
    name = st.segment_names(state)[0]
    path = st.segment_path(home.current_model, name)
    os.unlink(path)  # a hard link: replace, do not write through it into the snapshots' copy
    path.write_text("[]\n")
    with pytest.raises(ValueError, match="does not hold the bytes"):
        st.trained_entries(state, home.current_model)
    os.unlink(path)
    os.mkfifo(path)
    with pytest.raises(ValueError, match="not a regular file"):
        st.trained_entries(state, home.current_model)


def test_the_daemon_seals_snapshots_link_and_the_checkers_agree(tmp_path):
    root, env = stand_in_home(tmp_path, keep_snapshots=2)
    env["TRAININGD_TRAINED_SEGMENT_SIZE"] = "2"
    names = [f"f{i}.jsonl" for i in range(7)]
    for i, name in enumerate(names):
        drop(root, name, {}, [{"messages": [{"role": "user", "content": f"q{i}"},
                                            {"role": "assistant", "content": f"a{i}"}]}])
    r = run_daemon(root, env)
    assert r.returncode == 0, r.stderr
    home = Home.at(root)
    state = st.read_adapter_state(home.current_model)
    assert len(st.segment_names(state)) == 3 and len(state["trained"]) == 1 and state["trained_count"] == 7
    assert sorted(t["file"] for t in st.trained_entries(state, home.current_model)) == names
    assert check_home(home, expect_files=names) == []
    for s in snapshots.list_snapshots(home):
        assert (s["path"] / "trained").is_dir() or not st.segment_names(s["manifest"])
    # A file already trained, sealed long ago, is still a duplicate.
    drop(root, "again.jsonl", {}, [{"messages": [{"role": "user", "content": "q0"},
                                                 {"role": "assistant", "content": "a0"}]}])
    r = run_daemon(root, env)
    assert r.returncode == 0, r.stderr
    dup = json.loads(next((root / "queue" / "done").glob("*again*/job.json")).read_text())
    assert dup.get("duplicate_of"), dup
    assert check_home(home) == []
