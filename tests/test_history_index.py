"""The monitor's index of ``status/history.jsonl``: pages read back from the file, the same rows a full parse
gives, appended lines indexed alone, a replaced file indexed again, and a few bytes of memory a line.

Run: .venv/bin/python -m pytest tests/test_history_index.py -q
"""

from __future__ import annotations

import json
import os
import random
import tracemalloc

from trainingd.monitor import views
from trainingd.monitor.history_index import HistoryIndex, spread
from trainingd.paths import Home


def history_lines(n_jobs: int, seed: int = 0) -> list[dict]:
    """Job lines, most followed by the evaluation they triggered, now and then a gate reset or a broken line."""
    rng = random.Random(seed)
    out: list[dict] = []
    for i in range(n_jobs):
        job = {"job_id": f"{i:06d}-file", "file": f"f{i}.jsonl", "state": "done", "result": "ok", "steps": 3,
               "loss": rng.random(), "tokens": 30, "seconds": 0.5, "finished_at": "2026-01-01T00:00:00Z"}
        if rng.random() < 0.1:
            job["gate"] = {"decision": "rejected", "reason": "worse", "champion": {"exact_match": 0.5},
                           "candidate": {"exact_match": 0.25}}
        out.append(job)
        if rng.random() < 0.7:
            out.append({"kind": "eval", "job_id": job["job_id"], "exact_match": rng.random(), "correct": 3,
                        "total": 8, "trained_examples": i * 3})
        if rng.random() < 0.05:
            out.append({"kind": "gate_reset", "reason": "the curriculum rose"})
    return out


def write(path, entries: list[dict], *, mode: str = "w", torn: str = "") -> None:
    with open(path, mode, encoding="utf-8") as f:
        f.write("".join(json.dumps(e) + "\n" for e in entries) + torn)


def full_parse_rows(entries: list[dict]) -> list[dict]:
    """The rows the monitor built when it held every line parsed (oldest first)."""
    rows, by_id, last_eval = [], {}, None
    for e in entries:
        if e.get("kind") == "eval":
            row = by_id.get(e.get("job_id"))
            if row is not None and row["after"] is None:
                row["after"] = e
            last_eval = e
        elif e.get("kind") is None:
            row = {"entry": e, "before": last_eval, "after": None}
            rows.append(row)
            by_id[e["job_id"]] = row
    return [views.job_row(r["entry"], r["before"], r["after"]) for r in rows]


class Snaps:
    def by_job(self) -> dict:
        return {}


def test_pages_match_a_full_parse_and_appended_lines_are_indexed_alone(tmp_path):
    home = Home.at(tmp_path)
    home.status_dir.mkdir(parents=True)
    entries = history_lines(300)
    write(home.history, entries[:200], torn='{"job_id": "half')  # a line still being written waits
    index = HistoryIndex(home)
    expected = full_parse_rows(entries[:200])
    assert views.jobs_view(index, Snaps(), 0, 500)["jobs"] == list(reversed(expected))

    with open(home.history, "a", encoding="utf-8") as f:  # the writer finishes the line, then appends more
        f.write('-written", "file": "x"}\nnot json\n[1, 2]\n')
    write(home.history, entries[200:], mode="a")
    everything = entries[:200] + [{"job_id": "half-written", "file": "x"}] + entries[200:]
    expected = list(reversed(full_parse_rows(everything)))
    doc = views.jobs_view(index, Snaps(), 0, 500)
    assert doc["total"] == len(expected) and doc["jobs"] == expected
    assert views.jobs_view(index, Snaps(), 17, 5)["jobs"] == expected[17:22]
    assert views.jobs_view(index, Snaps(), len(expected) - 2, 5)["jobs"] == expected[-2:]
    assert views.jobs_view(index, Snaps(), len(expected) + 3, 5)["jobs"] == []
    assert [j["job_id"] for j in views.history_view(index, 0, 3)["jobs"]] == [r["job_id"] for r in expected[:3]]

    evals = [e for e in everything if e.get("kind") == "eval"]
    doc = views.eval_view(index, 10_000)
    assert doc["total"] == len(evals) and [e["exact_match"] for e in doc["evals"]] == [e["exact_match"] for e in evals]
    few = views.eval_view(index, 7)["evals"]
    assert len(few) == 7 and few[0]["exact_match"] == evals[0]["exact_match"] \
        and few[-1]["exact_match"] == evals[-1]["exact_match"]

    assert index.find_job("000299-file")["file"] == "f299.jsonl"  # among the newest: one line read back
    assert index.find_job("000001-file")["file"] == "f1.jsonl"  # older: found by a read of the file
    assert index.find_job("no-such-job") is None


def test_a_replaced_or_shrunk_file_is_indexed_again(tmp_path):
    home = Home.at(tmp_path)
    home.status_dir.mkdir(parents=True)
    write(home.history, history_lines(50, seed=1))
    index = HistoryIndex(home)
    assert views.jobs_view(index, Snaps(), 0, 500)["total"] == 50
    replacement = history_lines(5, seed=2)
    tmp = home.history.with_name("history.tmp")
    write(tmp, replacement)
    os.replace(tmp, home.history)
    assert views.jobs_view(index, Snaps(), 0, 500)["jobs"] == list(reversed(full_parse_rows(replacement)))
    write(home.history, replacement[:1])  # the same inode, shorter
    assert views.jobs_view(index, Snaps(), 0, 500)["total"] == 1
    home.history.unlink()
    assert views.jobs_view(index, Snaps(), 0, 500) == {"total": 0, "offset": 0, "limit": 500, "jobs": []}
    assert views.eval_view(index)["evals"] == []


def test_the_index_holds_a_few_bytes_a_line_not_the_lines(tmp_path):
    """Holding the lines parsed cost ~1.8 KB a job: weeks of a stream grew the monitor without bound."""
    home = Home.at(tmp_path)
    home.status_dir.mkdir(parents=True)
    entries = history_lines(20_000, seed=3)
    write(home.history, entries)
    size = home.history.stat().st_size
    tracemalloc.start()
    try:
        index = HistoryIndex(home)
        before = tracemalloc.take_snapshot()
        assert views.jobs_view(index, Snaps(), 0, 50)["total"] == 20_000
        views.eval_view(index)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert held < 64 * len(entries), f"{held} bytes held for {len(entries)} lines ({size} bytes of file)"


def test_spread_keeps_the_first_and_the_last():
    assert spread(5, 10) == [0, 1, 2, 3, 4]
    assert spread(1000, 3) == [0, 500, 999]
    assert spread(10, 1) == [9] and spread(0, 5) == [] and spread(4, 0) == []
    picked = spread(10_001, 1000)
    assert len(picked) == 1000 and picked[0] == 0 and picked[-1] == 10_000
