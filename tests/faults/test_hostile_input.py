"""Hostile input: every kind in tests/data/bad/ (and the ones made at test time: a 200 MB line, deep nesting, FIFOs,
symlinks, odd names) lands in queue/failed/ with a reason a person can act on; nothing outside the home is read
or written; memory per line is bounded (``formats.MAX_LINE_BYTES``, 8 MiB).

    ./run_tests.sh tests/faults/test_hostile_input.py -q

The content kinds are checked through the trainer's validator (``formats.scan_file``, what the trainer runs
before training and turns into a DATA_ERROR with this reason; ``tests/test_bad_input.py`` runs a few of them
through the real daemon and trainer); the kinds the inbox refuses run through a real daemon.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fault_helpers import STAND_IN_DEFAULTS, REPO, drop, job_metas, run_daemon, stand_in_home
from trainingd.checks.invariants import check_home
from trainingd.paths import Home
from trainingd.train.formats import MAX_LINE_BYTES, DataError, scan_file

pytestmark = pytest.mark.faults

CORPUS = REPO / "tests" / "data" / "bad"
# file -> words its reason must hold (where the problem is and what is wrong)
EXPECTED = {
    "alpaca_missing_output.jsonl": ["line 1", "instruction", "output"],
    "bad_loss_weight.jsonl": ["line 1", "loss_weight", "0 or 1"],
    "bare_string_line.jsonl": ["line 1", "expected a JSON object"],
    "blank_lines_only.jsonl": ["empty"],
    "control_garbage.jsonl": ["line 1", "invalid JSON"],
    "empty_file.jsonl": ["empty"],
    "empty_messages.jsonl": ["line 1", "\"messages\" is empty"],
    "huge_number.jsonl": ["line 1", "must be a string"],
    "image_content_part.jsonl": ["line 1", "image_url", "text-only"],
    "invalid_utf8.jsonl": ["line 1", "UTF-8", "0xe9"],
    "json_array_in_jsonl.jsonl": ["line 1", "not a JSON array"],
    "messages_not_a_list.jsonl": ["line 1", "must be an array"],
    "mixed_formats.jsonl": ["line 2", "format text", "format messages"],
    "nan_text.jsonl": ["line 1", "must be a string"],
    "nul_bytes.jsonl": ["binary", "NUL"],
    "null_content.jsonl": ["line 1", "null"],
    "numbers_for_strings.jsonl": ["line 1", "must be a string, got number"],
    "only_user_turn.jsonl": ["line 1", "no assistant turn"],
    "pretty_printed.jsonl": ["pretty-printed"],
    "prompt_without_completion.jsonl": ["line 1", "prompt", "completion"],
    "sharegpt_bad_from.jsonl": ["line 1", "alien"],
    "tool_call_without_name.jsonl": ["line 1", "name"],
    "truncated_last_line.jsonl": ["line 2", "invalid JSON"],
    "unknown_format.jsonl": ["line 1", "question", "expected"],
    "unknown_role.jsonl": ["line 1", "robot"],
    "utf16.jsonl": ["UTF-16", "iconv -f UTF-16 -t UTF-8"],
}
GOOD = {"messages": [{"role": "user", "content": "What is a queue?"}, {"role": "assistant", "content": "Jobs."}]}


def test_the_corpus_holds_every_kind_and_nothing_else():
    assert sorted(p.name for p in CORPUS.glob("*.jsonl")) == sorted(EXPECTED)
    assert len(EXPECTED) + 2 + len(INBOX_KINDS) >= 25  # with the two made at test time and the inbox's kinds
    assert all(p.stat().st_size < 10_000 for p in CORPUS.iterdir())  # big inputs are made at test time


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_is_refused_with_a_reason_a_person_can_act_on(name):
    with pytest.raises(DataError) as err:
        scan_file(CORPUS / name)
    for word in EXPECTED[name]:
        assert word in str(err.value), f"{name}: {err.value}"


def test_deep_nesting_is_a_bad_line_not_a_crash(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"text": ' + "[" * 200_000 + "]" * 200_000 + "}\n")
    with pytest.raises(DataError) as err:
        scan_file(path)
    assert "line 2" in str(err.value) and "nested too deeply" in str(err.value)


# VmHWM, not ru_maxrss: the latter survives exec, so a child forked from a large test process would report that.
SCAN = """
import sys
from pathlib import Path
from trainingd.train.formats import DataError, scan_file
try:
    scan_file(Path(sys.argv[1]))
except DataError as e:
    print(e)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("peak_kib", hwm.split()[1])
"""


def test_a_200_mb_single_line_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "one_line.jsonl"
    with open(path, "wb") as f:  # a valid record, 200 MB long: only its length is wrong
        f.write(json.dumps(GOOD).encode() + b"\n" + b'{"text": "')
        chunk = b"a" * 2**20
        for _ in range(200):
            f.write(chunk)
        f.write(b'"}\n' + json.dumps(GOOD).encode() + b"\n")
    res = subprocess.run([sys.executable, "-c", SCAN, str(path)], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    path.unlink()
    assert res.returncode == 0, res.stderr
    assert "line 2: line is longer than 8 MiB" in res.stdout
    peak_mib = int(res.stdout.split("peak_kib")[1]) / 1024
    # An interpreter and the validator plus one bounded line: far below the 200 MB the line holds.
    assert peak_mib < 40 + 6 * MAX_LINE_BYTES / 2**20, f"peak RSS {peak_mib:.0f} MiB"


# ------------------------------------------------------------------------------------------------ the inbox's kinds
def _fifo(inbox: Path, outside: Path) -> str:
    os.mkfifo(inbox / "pipe.jsonl")
    return "pipe.jsonl"


def _link_passwd(inbox: Path, outside: Path) -> str:
    (inbox / "passwd.jsonl").symlink_to("/etc/passwd")
    return "passwd.jsonl"


def _link_outside(inbox: Path, outside: Path) -> str:
    (inbox / "outside.jsonl").symlink_to(outside / "secret.jsonl")
    return "outside.jsonl"


def _link_dir(inbox: Path, outside: Path) -> str:
    (inbox / "dir.jsonl").symlink_to(outside)
    return "dir.jsonl"


def _folder(inbox: Path, outside: Path) -> str:
    (inbox / "folder.jsonl").mkdir()
    (inbox / "folder.jsonl" / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    return "folder.jsonl"


def _wrong_suffix(inbox: Path, outside: Path) -> str:
    (inbox / "notes.txt").write_text(json.dumps(GOOD) + "\n")
    return "notes.txt"


def _json_object(inbox: Path, outside: Path) -> str:
    (inbox / "object.json").write_text(json.dumps(GOOD))
    return "object.json"


INBOX_KINDS = {"fifo": (_fifo, "not a regular file"), "symlink to /etc/passwd": (_link_passwd, "symlink"),
               "symlink outside the home": (_link_outside, "symlink"), "symlink to a folder": (_link_dir, "symlink"),
               "folder": (_folder, "folder refused"), "wrong suffix": (_wrong_suffix, "not a .jsonl file"),
               ".json holding an object": (_json_object, "JSON array")}
ODD_NAMES = ["new\nline.jsonl", "-rf --all.jsonl", "a..b..c.jsonl", "x" * 240 + ".jsonl", "$(touch pwned).jsonl",
             "spaces and ü 日本.jsonl"]


def test_the_inbox_refuses_what_is_not_a_file_and_trains_odd_names_without_touching_anything_outside(tmp_path):
    root, env = stand_in_home(tmp_path, stable_seconds=0.3)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text(json.dumps({"stand_in": {**STAND_IN_DEFAULTS, "steps": 1}}) + "\n")
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    passwd = Path("/etc/passwd").read_bytes()
    outside_before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in outside.iterdir()}
    made = {kind: make(inbox, outside) for kind, (make, _) in INBOX_KINDS.items()}
    for name in ODD_NAMES:
        drop(root, name, {"steps": 1})
    res = run_daemon(root, env)
    assert res.returncode == 0, res.stderr[-3000:]

    failed = {m["original_name"]: m for m in job_metas(root, "failed")}
    for kind, (_, words) in INBOX_KINDS.items():
        meta = failed.get(made[kind])
        assert meta is not None, f"{kind}: {made[kind]} not in failed/"
        reason = (root / "queue" / "failed" / meta["id"] / "reason.txt").read_text()
        assert words in reason, f"{kind}: {reason}"
    assert sorted(m["original_name"] for m in job_metas(root, "done")) == sorted(ODD_NAMES)
    assert Path("/etc/passwd").read_bytes() == passwd
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in outside.iterdir()} == outside_before
    assert not (REPO / "pwned").exists() and not (root / "pwned").exists()
    link = next(p for p in (root / "queue" / "failed").rglob("passwd.jsonl"))
    assert link.is_symlink()  # kept as the link itself, never followed or copied
    assert [p.name for p in inbox.iterdir()] == []
    expect = [*made.values(), *ODD_NAMES]
    assert check_home(Home.at(root), expect_files=expect) == []


def test_a_file_renamed_into_the_inbox_while_still_being_written_is_never_half_trained(tmp_path):
    """Taken at the rename; the writer's later bytes land in the job's file: the trainer then sees a file whose
    hash differs from the one recorded at intake, or a truncated line: it is trained whole or refused whole."""
    root, env = stand_in_home(tmp_path, stable_seconds=0.3)
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    f = open(inbox / ".growing.jsonl.tmp", "w")
    f.write(json.dumps({"stand_in": {**STAND_IN_DEFAULTS, "steps": 1}}) + "\n")
    f.flush()
    os.rename(inbox / ".growing.jsonl.tmp", inbox / "growing.jsonl")
    daemon = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(root), "--once"],
                              env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    f.write('{"messages": [')  # still writing after the rename
    f.flush()
    _, err = daemon.communicate(timeout=120)
    f.close()
    assert daemon.returncode == 0, err[-3000:]
    assert check_home(Home.at(root), expect_files=["growing.jsonl"]) == []
