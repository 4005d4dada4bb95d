"""The job queue: states as folders, ordering, ids, crash leftovers.  Run: .venv/bin/pytest tests/test_queue.py -q"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from trainingd.paths import Home
from trainingd.atomic_ops import file_sha256 as sha256_file
from trainingd.jobqueue import JobQueue, QueueError, safe_stem


@pytest.fixture
def q(tmp_path) -> JobQueue:
    queue = JobQueue(Home.at(tmp_path / "h"))
    queue.ensure_dirs()
    return queue


def make(tmp_path: Path, name: str, text: str = '{"text": "hello"}\n') -> Path:
    p = tmp_path / "src" / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


def test_add_copies_file_hashes_it_and_writes_job_json(q, tmp_path):
    src = make(tmp_path, "my data é.jsonl", '{"text": "x"}\n')
    job = q.add(src, priority="high")
    assert src.exists(), "the CLI add copies; the source stays"
    assert job.state == "pending" and job.priority == "high"
    assert job.dir.parent == q.home.pending("high")
    assert job.data_file.name == "my data é.jsonl"
    assert job.data_file.read_text() == '{"text": "x"}\n'
    meta = json.loads((job.dir / "job.json").read_text())
    assert meta["sha256"] == sha256_file(src)
    assert meta["original_name"] == "my data é.jsonl" and meta["source"] == "cli" and meta["attempts"] == 0
    assert job.id == "000001-my_data__"
    assert set(meta) >= {"id", "original_name", "file", "sha256", "size_bytes", "priority", "source", "force",
                         "attempts", "enqueued_at", "claimed_at", "finished_at", "state", "duplicate_of", "reason",
                         "result"}


def test_add_with_move_takes_the_file(q, tmp_path):
    src = make(tmp_path, "a.jsonl")
    job = q.add(src, move=True, source="inbox")
    assert not src.exists()
    assert job.data_file.exists() and job.meta["source"] == "inbox"


def test_add_refuses_symlinks_folders_and_missing_files(q, tmp_path):
    target = make(tmp_path, "t.jsonl")
    link = tmp_path / "src" / "l.jsonl"
    link.symlink_to(target)
    with pytest.raises(QueueError, match="symlink"):
        q.add(link)
    with pytest.raises(QueueError, match="not a regular file"):
        q.add(tmp_path / "src")
    with pytest.raises(QueueError, match="no such file"):
        q.add(tmp_path / "nope.jsonl")
    assert q.counts()["pending"]["normal"] == 0


def test_transitions_and_counts(q, tmp_path):
    a = q.add(make(tmp_path, "a.jsonl"))
    b = q.add(make(tmp_path, "b.jsonl"))
    assert q.counts() == {"pending": {"high": 0, "normal": 2, "low": 0}, "processing": 0, "done": 0, "failed": 0}
    job = q.claim_next()
    assert job.id == a.id and job.state == "processing" and job.dir.parent == q.home.processing
    assert job.meta["claimed_at"]
    done = q.complete(job, result={"steps": 3})
    assert done.state == "done" and done.meta["result"] == {"steps": 3} and done.meta["finished_at"]
    assert json.loads((done.dir / "job.json").read_text())["state"] == "done"
    with pytest.raises(QueueError, match="done"):
        q.complete(done)  # a done job cannot be completed again
    job = q.claim_next()
    failed = q.fail(job, "line 3: not JSON\nfix the file and retry")
    assert (failed.dir / "reason.txt").read_text() == "line 3: not JSON\nfix the file and retry\n"
    assert failed.meta["reason"].startswith("line 3")
    assert q.claim_next() is None
    assert q.counts() == {"pending": {"high": 0, "normal": 0, "low": 0}, "processing": 0, "done": 1, "failed": 1}
    retried = q.retry(b.id)
    assert retried.state == "pending" and retried.meta["attempts"] == 0
    assert not (retried.dir / "reason.txt").exists() and retried.meta["previous_reason"].startswith("line 3")


def test_claim_order_is_priority_then_oldest_and_requeued_job_is_at_the_head(q, tmp_path):
    low = q.add(make(tmp_path, "low.jsonl"), priority="low")
    n1 = q.add(make(tmp_path, "n1.jsonl"))
    n2 = q.add(make(tmp_path, "n2.jsonl"))
    high = q.add(make(tmp_path, "high.jsonl"), priority="high")
    assert [j.id for j in q.jobs(["pending"])] == [high.id, n1.id, n2.id, low.id]
    assert q.claim_next().id == high.id
    first_normal = q.claim_next()
    assert first_normal.id == n1.id
    n3 = q.add(make(tmp_path, "n3.jsonl"))
    back = q.requeue(first_normal, attempts=1)
    assert back.state == "pending" and back.priority == "normal" and back.meta["attempts"] == 1
    assert [j.id for j in q.jobs(["pending"])] == [n1.id, n2.id, n3.id, low.id]
    assert q.claim_next().id == n1.id


def test_ids_are_unique_and_never_reused_even_after_removal(q, tmp_path):
    ids = [q.add(make(tmp_path, "same.jsonl")).id for _ in range(3)]
    assert len(set(ids)) == 3
    removed = q.remove(ids[-1])
    # Even if someone deletes the folders and the counter file, numbers on disk are not handed out again.
    import shutil
    shutil.rmtree(removed.dir)
    q.home.job_counter.unlink()
    new = q.add(make(tmp_path, "same.jsonl"))
    assert new.number == 3  # 000003 was deleted by hand; the counter fell back to the max on disk + 1
    q2 = JobQueue(q.home)
    later = q2.add(make(tmp_path, "same.jsonl"))
    assert later.number == 4 and later.id not in ids


def test_counter_survives_removal_of_the_highest_job(q, tmp_path):
    a = q.add(make(tmp_path, "a.jsonl"))
    b = q.add(make(tmp_path, "b.jsonl"))
    q.remove(b.id)
    c = q.add(make(tmp_path, "c.jsonl"))
    assert c.number == 3 and a.number == 1


def test_remove_moves_pending_to_failed_and_refuses_processing(q, tmp_path):
    a = q.add(make(tmp_path, "a.jsonl"))
    b = q.add(make(tmp_path, "b.jsonl"))
    gone = q.remove(b.id)
    assert gone.state == "failed" and gone.data_file.exists()
    assert (gone.dir / "reason.txt").read_text().strip() == "removed by user"
    running = q.claim_next()
    assert running.id == a.id
    with pytest.raises(QueueError, match="skip"):
        q.remove(a.id)
    with pytest.raises(QueueError, match="only pending"):
        q.remove(b.id)
    with pytest.raises(QueueError, match="no job"):
        q.remove("999999-nope")


def test_get_accepts_the_number_alone(q, tmp_path):
    a = q.add(make(tmp_path, "a.jsonl"))
    assert q.get("1").id == a.id and q.get(a.id).id == a.id
    with pytest.raises(QueueError):
        q.get("2")


def test_crash_leftovers_in_incoming_are_recovered(q, tmp_path):
    # 1: the file was moved in but job.json was never written -> becomes a pending job with its hash.
    w1 = q.incoming / "000007-moved"
    w1.mkdir()
    (w1 / "moved.jsonl").write_text('{"text": "a"}\n')
    # 2: a complete job folder that was never renamed into pending (high priority).
    src = make(tmp_path, "ready.jsonl")
    w2 = q.incoming / "000008-ready"
    w2.mkdir()
    os.replace(src, w2 / "ready.jsonl")
    meta = q._new_meta("000008-ready", w2 / "ready.jsonl", priority="high", source="cli", force=True)
    (w2 / "job.json").write_text(json.dumps(meta))
    # 3: a partial copy only (the source still exists elsewhere) -> discarded.
    w3 = q.incoming / "000009-partial"
    w3.mkdir()
    (w3 / ".partial.jsonl.part").write_text('{"te')
    recovered = q.recover_incoming()
    assert sorted(j.id for j in recovered) == ["000007-moved", "000008-ready"]
    assert list(q.incoming.iterdir()) == []
    j7, j8 = q.get("000007-moved"), q.get("000008-ready")
    assert j7.state == "pending" and j7.meta["sha256"] == sha256_file(j7.data_file)
    assert j8.priority == "high" and j8.meta["force"] is True
    # numbers seen in .incoming are never handed out again
    assert q.add(make(tmp_path, "next.jsonl")).number == 10


def test_reject_keeps_a_symlink_as_a_link_and_writes_a_reason(q, tmp_path):
    target = make(tmp_path, "target.jsonl")
    link = tmp_path / "src" / "link.jsonl"
    link.symlink_to(target)
    job = q.reject(link, "symlink refused: copy the file into inbox/ instead")
    assert job.state == "failed" and job.data_file.is_symlink()
    assert target.read_text() == '{"text": "hello"}\n'
    assert "symlink refused" in (job.dir / "reason.txt").read_text()
    with pytest.raises(QueueError, match="not a regular data file"):
        q.retry(job.id)


def test_safe_stem():
    assert safe_stem("my file (1).jsonl") == "my_file__1_"
    assert len(safe_stem("x" * 100 + ".jsonl")) == 40
    assert safe_stem("données.jsonl") == "donn_es"
