"""Inbox intake: only complete files are claimed; nothing dropped in is lost.

Run: .venv/bin/python -m pytest tests/test_intake.py -q

Most tests drive ``Intake.poll()`` in-process with a hand-moved clock, so "stable for stable_seconds"
is decided by the test, not by how busy the machine is. The last one runs a real daemon subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import wait_for

from trainingd.config import Config
from trainingd.contracts.requests import write_request
from trainingd.daemon.intake import SYMLINK_REASON, Intake
from trainingd.paths import Home
from trainingd.jobqueue import JobQueue

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make_intake(tmp_path: Path, *, watch: bool = False) -> tuple[Intake, Clock, Home]:
    home = Home.at(tmp_path / "h")
    queue = JobQueue(home)
    queue.ensure_dirs()
    home.inbox.mkdir(parents=True)
    clock = Clock()
    intake = Intake(home, queue, Config(stable_seconds=1.0, rescan_interval_s=5.0), clock=clock, watch=watch)
    intake.start()
    return intake, clock, home




def test_file_written_in_place_is_not_claimed_while_it_still_grows(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    path = home.inbox / "growing.jsonl"
    with open(path, "w") as f:
        for i in range(5):
            f.write(json.dumps({"text": f"line {i}"}) + "\n")
            f.flush()
            os.utime(path, ns=(i * 10**9, i * 10**9))  # a distinct mtime per write, whatever the fs resolution
            clock.t += 3.0  # far longer than stable_seconds between writes: only the changes keep it unclaimed
            assert intake.poll(force=True) == []
            assert path.exists()
    clock.t += 0.5
    assert intake.poll(force=True) == [], "stable for less than stable_seconds"
    clock.t += 0.6
    jobs = intake.poll(force=True)
    assert len(jobs) == 1 and not path.exists()
    assert jobs[0].state == "pending" and jobs[0].meta["source"] == "inbox"
    assert jobs[0].data_file.read_text().count("\n") == 5


def test_renamed_in_file_is_claimed_without_waiting(tmp_path):
    intake, clock, home = make_intake(tmp_path, watch=True)
    try:
        tmp = home.inbox / "batch.jsonl.tmp"
        tmp.write_text('{"text": "a"}\n')
        intake.poll(force=True)
        tmp.rename(home.inbox / "batch.jsonl")
        # The clock never moves: only the rename event can make it complete.
        jobs = wait_for(lambda: intake.poll(), "the renamed file to be claimed")
        assert [j.meta["original_name"] for j in jobs] == ["batch.jsonl"]
        assert intake.observer_kind in ("native", "polling")
    finally:
        intake.stop()


def test_tmp_part_and_hidden_names_are_ignored(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    names = [".x.tmp", "x.jsonl.tmp", "y.part", ".hidden.jsonl"]
    for n in names:
        (home.inbox / n).write_text('{"text": "a"}\n')
    for _ in range(3):
        clock.t += 10
        assert intake.poll(force=True) == []
    assert sorted(p.name for p in home.inbox.iterdir()) == sorted(names)
    assert intake.queue.jobs() == []


def test_symlink_becomes_a_failed_job_and_its_target_is_untouched(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    target = tmp_path / "outside.jsonl"
    target.write_text('{"text": "secret"}\n')
    (home.inbox / "link.jsonl").symlink_to(target)
    jobs = intake.poll(force=True)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.state == "failed" and job.data_file.is_symlink()
    assert os.readlink(job.data_file) == str(target)
    assert (job.dir / "reason.txt").read_text().strip() == SYMLINK_REASON
    assert target.read_text() == '{"text": "secret"}\n'
    assert not (home.inbox / "link.jsonl").exists()


def test_folder_and_wrong_suffix_become_failed_jobs_with_reasons(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    (home.inbox / "a folder").mkdir()
    (home.inbox / "a folder" / "inside.jsonl").write_text('{"text": "a"}\n')
    (home.inbox / "notes.txt").write_text("hello\n")
    assert intake.poll(force=True) == []  # not yet stable
    clock.t += 1.5
    jobs = {j.meta["original_name"]: j for j in intake.poll(force=True)}
    assert set(jobs) == {"a folder", "notes.txt"}
    assert all(j.state == "failed" for j in jobs.values())
    assert "folder refused" in (jobs["a folder"].dir / "reason.txt").read_text()
    assert (jobs["a folder"].data_file / "inside.jsonl").exists()  # moved whole, nothing lost
    assert "not a .jsonl file" in (jobs["notes.txt"].dir / "reason.txt").read_text()
    assert list(home.inbox.iterdir()) == []


def test_unicode_and_space_names_are_accepted(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    name = "données d'été 🚀 v2.jsonl"
    (home.inbox / name).write_text('{"text": "é"}\n', encoding="utf-8")
    intake.poll(force=True)
    clock.t += 1.5
    (job,) = intake.poll(force=True)
    assert job.state == "pending" and job.data_file.name == name
    assert job.data_file.read_text(encoding="utf-8") == '{"text": "é"}\n'
    assert job.id.startswith("000001-donn_es_d_")


def test_running_daemon_notices_a_dropped_file(tmp_path):
    root = tmp_path / "h"
    home = Home.at(root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for(lambda: home.pid.exists() and home.status.exists(), "the daemon to start")
        # Paused, the daemon still takes files in but starts no trainer: the test needs no model.
        req = write_request(home, "pause")

        def acked() -> bool:
            st = json.loads(home.status.read_text())
            return any(a["id"] == req.id for a in st["control"]["acks"])

        wait_for(acked, "the pause to be acknowledged")
        tmp = root / "inbox" / "dropped later.jsonl.tmp"
        tmp.write_text('{"text": "a"}\n')
        tmp.rename(root / "inbox" / "dropped later.jsonl")
        jobs = wait_for(lambda: JobQueue(home).jobs(["pending"]), "the daemon to claim the file")
        assert jobs[0].meta["original_name"] == "dropped later.jsonl"
        assert not (root / "inbox" / "dropped later.jsonl").exists()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


# ------------------------------------------------------------------------------- JSON array files
RECORDS = [{"instruction": "Add 1 and 1", "input": "", "output": "2", "history": [["Hi", "Hello"]]},
           {"instruction": "Café ☕?", "output": "Oui, données 日本", "system": "Be brief."},
           {"instruction": "Nested", "output": "x", "meta": {"a": [1, 2.5, None, True]}}]


def test_a_json_array_is_converted_to_jsonl_and_queued_and_the_inbox_is_left_empty(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    (home.inbox / "alpaca data.json").write_text(json.dumps(RECORDS, indent=2, ensure_ascii=False),
                                                 encoding="utf-8")
    assert intake.poll(force=True) == []  # written in place: not complete until stable
    clock.t += 1.5
    (job,) = intake.poll(force=True)
    assert job.state == "pending" and job.data_file.name == "alpaca data.jsonl"
    lines = job.data_file.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == RECORDS
    assert job.meta["converted_from"] == "alpaca data.json" and job.meta["converted_records"] == 3
    assert job.meta["original_name"] == "alpaca data.jsonl" and job.meta["sha256"]
    assert list(home.inbox.iterdir()) == []  # no .json, no .jsonl, no hidden temporary file
    # The converted file is one the trainer's validation accepts.
    from trainingd.train.formats import scan_file

    scan = scan_file(job.data_file)
    assert (scan.format, scan.examples) == ("alpaca", 3)


def test_a_json_array_renamed_in_is_converted_at_once(tmp_path):
    intake, clock, home = make_intake(tmp_path, watch=True)
    try:
        tmp = home.inbox / "batch.json.tmp"
        tmp.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
        intake.poll(force=True)
        tmp.rename(home.inbox / "batch.json")
        jobs = wait_for(lambda: intake.poll(), "the renamed .json to be converted")
        assert [j.data_file.name for j in jobs] == ["batch.jsonl"]
        assert jobs[0].data_file.read_text() == '{"text": "a"}\n{"text": "b"}\n'
    finally:
        intake.stop()


def test_a_converted_json_never_replaces_a_jsonl_of_the_same_name(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    (home.inbox / "data.jsonl").write_text('{"text": "from the jsonl"}\n')
    (home.inbox / "data.json").write_text('[{"text": "from the json"}]')
    intake.poll(force=True)
    clock.t += 1.5
    jobs = {j.data_file.name: j for j in intake.poll(force=True)}
    jobs.update({j.data_file.name: j for j in intake.poll(force=True)})
    assert set(jobs) == {"data.jsonl", "data-2.jsonl"}
    assert jobs["data.jsonl"].data_file.read_text() == '{"text": "from the jsonl"}\n'
    assert jobs["data-2.jsonl"].data_file.read_text() == '{"text": "from the json"}\n'
    assert jobs["data-2.jsonl"].meta["converted_from"] == "data.json"
    assert list(home.inbox.iterdir()) == []


BAD_JSON = {
    "object.json": ('{"text": "a"}\n{"text": "b"}\n', "holds a JSON object, not an array of records"),
    "invalid.json": ('[{"text": "a"},\n {"text": }]', "is not valid JSON (Expecting value at line 2 column 11)"),
    "strings.json": ('["a", "b"]', "record 1 is a string, not an object"),
    "empty.json": ("", "is empty"),
    "empty array.json": ("[ ]", "is an empty array"),
}


def test_a_json_file_that_is_not_an_array_of_objects_fails_with_how_to_convert_it(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    for name, (text, _) in BAD_JSON.items():
        (home.inbox / name).write_text(text)
    intake.poll(force=True)
    clock.t += 1.5
    jobs = {j.meta["original_name"]: j for j in intake.poll(force=True)}
    assert set(jobs) == set(BAD_JSON)
    for name, (text, problem) in BAD_JSON.items():
        job = jobs[name]
        reason = (job.dir / "reason.txt").read_text()
        assert job.state == "failed" and reason.startswith(f"{name} {problem}"), reason
        assert "jq -c '.[]'" in reason and "\n" not in reason.rstrip("\n")
        assert job.data_file.read_text() == text  # the file itself is kept, byte for byte
    assert "jq -c '.[]' 'empty array.json' > 'empty array.jsonl'" in (jobs["empty array.json"].dir
                                                                     / "reason.txt").read_text()
    assert list(home.inbox.iterdir()) == []


def test_a_conversion_left_half_done_by_a_crash_is_cleaned_up_and_redone(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    (home.inbox / ".trainingd-convert-abc123.tmp").write_text('{"text": "a"}\n')  # what a crash left
    (home.inbox / "data.json").write_text('[{"text": "a"}, {"text": "b"}]')
    intake.start()  # as the daemon does at start-up
    assert [p.name for p in home.inbox.iterdir()] == ["data.json"]
    intake.poll(force=True)
    clock.t += 1.5
    (job,) = intake.poll(force=True)
    assert job.data_file.read_text() == '{"text": "a"}\n{"text": "b"}\n'


def test_other_suffixes_are_still_refused_naming_both_accepted_forms(tmp_path):
    intake, clock, home = make_intake(tmp_path)
    (home.inbox / "data.csv").write_text("a,b\n")
    (home.inbox / "data.json.gz").write_bytes(b"\x1f\x8b")
    intake.poll(force=True)
    clock.t += 1.5
    jobs = intake.poll(force=True)
    assert sorted(j.meta["original_name"] for j in jobs) == ["data.csv", "data.json.gz"]
    for job in jobs:
        reason = (job.dir / "reason.txt").read_text()
        assert "not a .jsonl file" in reason and "*.json" in reason
