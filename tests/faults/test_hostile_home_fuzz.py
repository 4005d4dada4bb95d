"""A hostile-home fuzzer: random entries of every kind in every folder of a home while a real daemon trains.

    pytest tests/faults/test_hostile_home_fuzz.py                       # a few examples, well under a minute
    TRAININGD_FUZZ_EXAMPLES=50 pytest tests/faults/test_hostile_home_fuzz.py   # longer

Each example builds a fresh home (the stand-in trainer of ``fault_helpers``), puts random entries (files: empty,
bad JSON, random bytes, large; folders; FIFOs; sockets; dangling, looping and outside symlinks; names that are not
UTF-8 or are very long) into random folders of it, some before the daemon starts and some while it runs, and drops
good files among them. Properties: the status keeps updating, every good file ends in ``done/`` exactly once,
nothing outside the home is read or written (an outside folder holds a trainable file and a stop request, reachable
only through the links), and the invariants hold (``trainingd.checks.invariants.check_home``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fault_helpers import DAEMON, REPO, drop, job_metas, stand_in_home
from trainingd.checks.invariants import check_home
from trainingd.paths import Home

pytestmark = pytest.mark.faults

EXAMPLES = int(os.environ.get("TRAININGD_FUZZ_EXAMPLES", "3"))
FOLDERS = ["", "inbox", "queue", "queue/pending/high", "queue/pending/normal", "queue/pending/low",
           "queue/processing", "queue/done", "queue/failed", "status", "logs", "control", "control/requests",
           "current_model", "current_model/checkpoints", "snapshots", "cache", "models"]
KINDS = ["empty", "bad_json", "random_bytes", "large", "folder", "fifo", "socket", "dangling_link", "looping_link",
         "outside_file_link", "outside_folder_link"]
SUFFIXES = [".jsonl", ".json", "", ".log", ".txt"]

names = st.one_of(
    st.tuples(st.text("abcxyz_-", min_size=1, max_size=12), st.sampled_from(SUFFIXES)).map("".join),
    st.sampled_from([b"bad\xff\xfename.jsonl", b"\xc3\x28.json", b"x\x80y"]),  # not UTF-8
    st.integers(200, 249).map(lambda n: "l" * n + ".jsonl"),  # very long
)
entries = st.lists(st.tuples(st.sampled_from(FOLDERS), st.sampled_from(KINDS), names), min_size=3, max_size=9)


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    out = {}
    for p in sorted(folder.rglob("*")):
        st_ = p.lstat()
        out[str(p.relative_to(folder))] = (p.read_bytes() if p.is_file() else b"", st_.st_mtime_ns)
    return out


def _place(root: Path, outside: Path, folder: str, kind: str, name: str | bytes, rng: random.Random) -> None:
    parent = root / folder
    parent.mkdir(parents=True, exist_ok=True)
    raw = name if isinstance(name, bytes) else name.encode()
    if folder.startswith("queue/pending/") and kind == "folder" and rng.random() < 0.5:
        raw = f"{rng.randint(900, 999):06d}-evil".encode()  # looks like a job: it must end in failed/ with a reason
    path = os.path.join(os.fsencode(parent), raw)
    if os.path.lexists(path):
        return
    if kind in ("empty", "bad_json", "random_bytes", "large"):
        data = {"empty": b"", "bad_json": b'{"messages": [\n{not json\n', "random_bytes": rng.randbytes(300),
                "large": rng.randbytes(2 * 2**20)}[kind]
        with open(path, "wb") as f:
            f.write(data)
    elif kind == "folder":
        os.mkdir(path)
        with open(os.path.join(path, b"inner.jsonl"), "wb") as f:
            f.write(b'{"x": 1}\n')
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        cwd = os.getcwd()
        os.chdir(parent)  # a socket's path is limited to 108 bytes: bind it by its relative name
        try:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.bind(raw)
            except OSError:
                pass  # a name too long for a socket
            finally:
                s.close()  # the socket file stays; nothing listens
        finally:
            os.chdir(cwd)
    elif kind == "dangling_link":
        os.symlink(os.fsencode(outside / "no-such-thing"), path)
    elif kind == "looping_link":
        os.symlink(raw, path)
    elif kind == "outside_file_link":
        target = outside / ("stop.json" if folder == "control/requests" else "secret.jsonl")
        os.symlink(os.fsencode(target), path)
    else:
        os.symlink(os.fsencode(outside / "data"), path)


def _status(root: Path) -> dict:
    try:
        return json.loads((root / "status" / "training_status.json").read_text())
    except (OSError, ValueError):
        return {}


def _done_names(root: Path) -> list[str]:
    if not (root / "queue" / "done").is_dir():
        return []
    return sorted(m["original_name"] for m in job_metas(root, "done"))


# Each example runs a daemon for seconds: no shrinking (the failing example is printed as generated).
@settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate], report_multiple_bugs=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(before=entries, during=entries, seed=st.integers(0, 2**32 - 1))
def test_nothing_in_a_home_stops_the_loop(before, during, seed):
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        tmp_path = Path(tmp)
        root, env = stand_in_home(tmp_path, rescan_interval_s=0.5, stable_seconds=0.2, max_attempts=2)
        outside = tmp_path / "outside"
        (outside / "data").mkdir(parents=True)
        (outside / "secret.jsonl").write_text(json.dumps({"stand_in": {"steps": 1}}) + "\n")
        (outside / "data" / "inside.jsonl").write_text(json.dumps({"stand_in": {"steps": 1}}) + "\n")
        (outside / "stop.json").write_text(json.dumps({"id": "0123456789ab", "action": "stop",
                                                       "created_at": time.time() + 3600}))
        seen_outside = _snapshot(outside)
        for folder, kind, name in before:
            _place(root, outside, folder, kind, name, rng)
        good = [f"good-{i}.jsonl" for i in range(2)]
        proc = subprocess.Popen([*DAEMON, "--home", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env, cwd=REPO)
        try:
            end = time.monotonic() + 90
            seqs = []
            pending = list(during)
            dropped = 0
            while time.monotonic() < end:
                seqs.append(_status(root).get("seq", 0))
                if pending:
                    _place(root, outside, *pending.pop(0), rng)
                elif dropped < len(good):
                    drop(root, good[dropped], {"steps": 2})
                    dropped += 1
                elif all(n in _done_names(root) for n in good):
                    break
                assert proc.poll() is None, "the daemon exited"
                time.sleep(0.1)
            done = _done_names(root)
            assert all(done.count(n) == 1 for n in good), (done, _status(root).get("faults"))
            seq = _status(root).get("seq", 0)
            time.sleep(1.0)
            assert _status(root).get("seq", 0) > seq, "the status stopped updating"
            assert sorted(seqs) == seqs
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            err = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
        assert proc.returncode == 0, err[-3000:]
        assert _snapshot(outside) == seen_outside, "something outside the home was written"
        assert "secret.jsonl" not in done and "inside.jsonl" not in done  # nothing outside was read in
        problems = check_home(Home.at(root), expect_files=good)
        assert problems == [], problems
        assert "Traceback" not in err, err[-3000:]
        digest = hashlib.sha256((outside / "secret.jsonl").read_bytes()).hexdigest()
        assert all(t.get("sha256") != digest for t in json.loads(
            (root / "current_model" / "adapter_state.json").read_text()).get("trained", []))
