"""The on-disk contracts: one stdlib-only home, used by everyone, round-tripping.

Run: .venv/bin/pytest tests/test_contracts.py -q
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainingd import exit_codes
from trainingd.contracts import adapter_state, job, manifest, progress, requests, result, status, trainer_command
from trainingd.contracts import approvals, autogen_state, base_hash, hashes, layer_activity, trainer_record
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "trainingd"
CONTRACTS = PACKAGE / "contracts"

# The names of the contract files (and the requests folder) as a module would spell them to open one.
CONTRACT_NAMES = ("job.json", "job.json.broken", "trainer_command.json", "trainer_progress.json",
                  "training_status.json", "result.json", "adapter_state.json", "manifest.json", ".trainer.json",
                  "requests", "layer_activity.json", "autogen_state.json",
                  "approvals.jsonl", "hashes.jsonl", "base_hash.json")
# Home's properties for contract files: reaching one means reading or writing the file by hand.
CONTRACT_ATTRS = ("status", "trainer_progress", "layer_activity", "trainer_record", "trainer_command",
                  "control_requests", "emergency_stop", "autogen_state",
                  "approvals_log", "hashes")
# paths.py spells every path of a home; the trainer hands its progress path to Progress, which writes it through
# contracts.progress (a standalone run writes the same document elsewhere).
ALLOWED = {("paths.py", "*"), ("train/__main__.py", "trainer_progress"), ("train/__main__.py", "layer_activity"),
           # The fix a health check prints names the status file; the start-up sweep matches the temp names of
           # these files' atomic writes. Neither reads a contract file.
           ("checks/health.py", "status"), ("checks/invariants.py", "control_requests"),
           ("checks/invariants.py", "trainer_command"),
           ("checks/invariants.py", "trainer_record")}


def _docstring_nodes(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def contract_accesses(source: str, rel: str) -> list[str]:
    """Where ``source`` names a contract file or reaches a Home property of one (docstrings and prose aside)."""
    tree = ast.parse(source)
    docs = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value.strip()
            for name in CONTRACT_NAMES:
                if text == name or text.endswith("/" + name) or text.startswith(name + "/"):
                    found.append(f"{rel}:{node.lineno}: names {name!r}")
        elif isinstance(node, ast.Attribute) and node.attr in CONTRACT_ATTRS:
            owner = ast.unparse(node.value)
            if owner.endswith("home") and (rel, node.attr) not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: {owner}.{node.attr}")
    return found


def test_the_checker_catches_a_module_that_reads_a_contract_file_by_hand():
    sample = ('from trainingd.atomic_ops import read_json\n'
              'def f(job, home):\n'
              '    """Reads result.json (prose in a docstring is fine)."""\n'
              '    log = "could not read job.json: fix it"  # a message, not a path\n'
              '    return read_json(job.dir / "result.json"), read_json(home.trainer_record)\n')
    found = contract_accesses(sample, "daemon.py")
    assert sorted(found) == ["daemon.py:5: home.trainer_record", "daemon.py:5: names 'result.json'"]


def test_no_module_outside_contracts_reads_or_writes_a_contract_file():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if path.is_relative_to(CONTRACTS) or (rel, "*") in ALLOWED:
            continue
        found += contract_accesses(path.read_text(), rel)
    assert not found, "contract files are read and written only through trainingd.contracts:\n" + "\n".join(found)


def test_contracts_import_neither_torch_nor_anything_outside_the_stdlib_core():
    modules = sorted(p.stem for p in CONTRACTS.glob("*.py") if p.stem != "__init__")
    code = ("import sys, json\n" + "".join(f"import trainingd.contracts.{m}\n" for m in modules) +
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True,
                                           text=True).stdout))
    assert not loaded & {"torch", "transformers", "peft", "datasets", "accelerate", "bitsandbytes", "numpy"}
    ours = {m for m in loaded if m.startswith("trainingd")}
    # trainingd.faults (stdlib only): the write points of the contracts are fault-injection points.
    allowed = {"trainingd", "trainingd.atomic_ops", "trainingd.paths", "trainingd.exit_codes", "trainingd.contracts",
               "trainingd.faults"}
    assert ours - allowed == {f"trainingd.contracts.{m}" for m in modules}


@pytest.fixture
def home(tmp_path) -> Home:
    h = Home.at(tmp_path)
    for d in h.runtime_dirs():
        d.mkdir(parents=True, exist_ok=True)
    return h


def test_job_round_trips_and_a_broken_one_says_why(tmp_path):
    meta = {"id": "000001-chat", "original_name": "chat.jsonl", "file": "chat.jsonl", "sha256": "ab" * 32,
            "priority": "high", "attempts": 0, "enqueued_at": job.now_iso(), "state": "pending"}
    job.write_job(tmp_path, meta)
    assert job.read_job(tmp_path) == (meta, None)
    assert job.read_job(tmp_path / "nothing") == (None, None)
    (tmp_path / job.FILE).write_text("{not json")
    read, why = job.read_job(tmp_path)
    assert read is None and "not valid JSON" in why
    (tmp_path / job.FILE).write_text(json.dumps({"file": "../x"}))
    assert "names no data file" in job.read_job(tmp_path)[1]
    job.keep_broken(tmp_path)
    assert (tmp_path / job.BROKEN_FILE).read_text() == json.dumps({"file": "../x"})
    assert not (tmp_path / job.FILE).exists()


def test_requests_round_trip_in_order_and_a_malformed_one_is_invalid(home):
    first = requests.write_request(home, "pause")
    second = requests.write_request(home, "skip")
    (home.control_requests / "99999999999999999999-x.json").write_text("[")
    got = requests.read_requests(home)
    assert [(r.id, r.action) for r in got] == [(first.id, "pause"), (second.id, "skip"), ("99999999999999999999-x",
                                                                                          "invalid")]
    assert got[0].created_at == pytest.approx(first.created_at)
    for r in got:
        requests.consume(r)
    assert requests.read_requests(home) == []
    with pytest.raises(ValueError):
        requests.write_request(home, "explode")
    assert not requests.is_emergency_stop(home)
    home.emergency_stop.touch()
    assert requests.is_emergency_stop(home)
    requests.clear_emergency_stop(home)
    assert not requests.is_emergency_stop(home)


def test_trainer_command_round_trips_and_a_broken_one_reads_as_none(home):
    assert trainer_command.read_trainer_command(home) is None and trainer_command.trainer_command_stamp(home) is None
    trainer_command.write_trainer_command(home, "000003-x", "pause", 7, config={"epochs": 2})
    order = trainer_command.read_trainer_command(home)
    assert (order.job_id, order.action, order.seq, order.config) == ("000003-x", "pause", 7, {"epochs": 2})
    assert trainer_command.trainer_command_stamp(home) is not None
    home.trainer_command.write_text('{"job_id": "000003-x", "action": "dance"}')
    assert trainer_command.read_trainer_command(home) is None
    trainer_command.clear_trainer_command(home)
    assert not home.trainer_command.exists()


def test_progress_round_trips_and_feeds_the_status(home):
    doc = progress.initial_progress("000004-x", pid=123)
    assert tuple(doc) == progress.FIELDS
    doc.update(status="training", step=5, total_steps=10, loss=0.5, tokens_per_s=99.0)
    progress.write_progress(home.trainer_progress, doc)
    assert progress.read_progress(home, "000004-x") == doc
    assert progress.read_progress(home, "000005-y") is None  # another job's progress is not this one's
    composed = status.compose_status(daemon={"pid": 1}, status="training", job={"id": "000004-x"}, progress=doc)
    assert (composed["job"]["step"], composed["metrics"]["loss"], composed["current_step"]) == (5, 0.5, 5)
    assert set(composed["metrics"]) == set(progress.METRIC_FIELDS)
    progress.clear_progress(home)
    assert progress.read_progress(home) is None


def test_status_round_trips_with_increasing_seq_and_a_broken_one_reads_as_none(home):
    writer = status.StatusWriter(home)
    written = writer.write(status.compose_status(daemon={"pid": 1}, status="idle"))
    assert status.read_status(home) == written
    again = status.StatusWriter(home).write(status.compose_status(daemon={"pid": 2}, status="paused"))
    assert again["seq"] == written["seq"] + 1  # continues across daemon restarts
    home.status.write_text("{")
    assert status.read_status(home.root) is None


def test_result_round_trips_and_a_missing_one_is_empty(tmp_path):
    path = result.result_path(tmp_path)
    assert result.read_result(path) == {}
    result.write_result(path, result.RunResult(exit_codes.OK, summary={"steps": 3, "loss": float("nan")}))
    got = result.read_result(path)
    # never NaN on disk
    assert got == {"exit": exit_codes.name_of(exit_codes.OK), "summary": {"steps": 3, "loss": None}}
    assert result.summary_of(got) == {"steps": 3, "loss": None}
    result.write_result(path, result.RunResult(exit_codes.DATA_ERROR, reason="bad lines", details=["line 2"]))
    assert result.read_result(path) == {"exit": exit_codes.name_of(exit_codes.DATA_ERROR), "reason": "bad lines",
                                        "details": ["line 2"]}
    result.clear_result(tmp_path)
    assert not path.exists()


def test_adapter_state_round_trips_and_each_publish_is_a_new_generation(tmp_path):
    assert adapter_state.read_adapter_state(tmp_path) is None and adapter_state.adapter_state_stamp(tmp_path) == ()
    first = adapter_state.next_state(None, entry={"job_id": "000001-a", "sha256": "1"}, base_model="/b",
                                     base_model_hash="h", locked={"lora.r": 8}, model_name="m")
    adapter_state.write_adapter_state(tmp_path, first)
    assert adapter_state.read_adapter_state(tmp_path) == first
    stamp = adapter_state.adapter_state_stamp(tmp_path)
    second = adapter_state.next_state(first, entry={"job_id": "000002-b", "sha256": "2"}, base_model="/b",
                                      base_model_hash="h", locked={"lora.r": 8}, model_name="m")
    adapter_state.write_adapter_state(tmp_path, second)
    assert second["generation"] == 2 and adapter_state.generation_id(second) != adapter_state.generation_id(first)
    assert [t["job_id"] for t in adapter_state.trained_entries(adapter_state.read_adapter_state(tmp_path))] == [
        "000001-a", "000002-b"]
    assert adapter_state.adapter_state_stamp(tmp_path) != stamp
    (tmp_path / adapter_state.FILE).write_text("[1]")
    with pytest.raises(ValueError):
        adapter_state.read_adapter_state(tmp_path)


def test_manifest_round_trips_with_its_step(tmp_path):
    manifest.write_manifest(tmp_path, {"job_id": "000001-a", "adapter_generation": "g1"}, step=40)
    got = manifest.read_manifest(tmp_path)
    assert (got["job_id"], got["adapter_generation"], got["step"]) == ("000001-a", "g1", 40)
    with pytest.raises(ValueError):
        manifest.write_manifest(tmp_path, {"loss": float("nan")}, step=1)  # never NaN on disk


def test_trainer_record_round_trips_and_a_broken_one_reads_as_none(home):
    assert trainer_record.read_trainer_record(home) is None
    record = trainer_record.TrainerRecord(pid=os.getpid(), pgid=os.getpid(), job_id="000001-a",
                                          started_at=job.now_iso(), daemon_pid=1)
    trainer_record.write_trainer_record(home, record)
    assert trainer_record.read_trainer_record(home) == record
    group = dataclasses.replace(record, machines=2, trainer_args=("--home", str(home), "--job-id", "000001-a"))
    trainer_record.write_trainer_record(home, group)
    assert trainer_record.read_trainer_record(home) == group
    home.trainer_record.write_text('{"pid": "not a number"}')
    assert trainer_record.read_trainer_record(home) is None
    trainer_record.clear_trainer_record(home)
    assert not home.trainer_record.exists()


def test_layer_activity_round_trips_and_its_summary_reaches_the_status(home):
    rows = [{"name": f"model.layers.{i}.self_attn.q_proj", "layer": i, "module": "q_proj", "update_norm": 1.0 + i,
             "delta_norm": d, "grad_norm": float("nan")} for i, d in enumerate([0.1, 0.5, None, 0.3])]
    doc = layer_activity.make_doc(rows, job_id="000004-x", step=7, previous_step=5)
    layer_activity.write_layer_activity(home.layer_activity, doc)
    assert layer_activity.read_layer_activity(home) == doc == layer_activity.read_layer_activity(home.root)
    assert doc["modules"][0]["grad_norm"] is None  # never NaN on disk
    short = layer_activity.summary(doc, k=2)
    assert [r["layer"] for r in short["top"]] == [1, 3] and short["modules"] == 4 and short["step"] == 7
    prog = {**progress.initial_progress("000004-x", pid=1), "layer_activity_summary": short}
    composed = status.compose_status(daemon={"pid": 1}, status="training", job={"id": "000004-x"}, progress=prog)
    assert composed["layer_activity_summary"] == short and composed["schema_version"] == 1
    home.layer_activity.write_text("{")
    assert layer_activity.read_layer_activity(home) is None


def test_autogen_state_round_trips_and_a_new_config_seed_starts_over(home):
    assert autogen_state.read_autogen_state(home) == {} and autogen_state.next_seed({}, 5) == 5
    doc = autogen_state.after_batch({}, config_seed=5, seed=5, level=1, file="syllo_autogen_x_count3.jsonl", count=3)
    doc = autogen_state.after_batch(doc, config_seed=5, seed=6, level=2, file="syllo_autogen_y_count4.jsonl", count=4)
    autogen_state.write_autogen_state(home, doc)
    saved = json.loads((home.root / "status" / "autogen_state.json").read_text())
    assert saved == autogen_state.read_autogen_state(home) == doc
    assert {k: saved[k] for k in ("config_seed", "next_seed", "batches", "examples")} == {
        "config_seed": 5, "next_seed": 7, "batches": 2, "examples": 7}
    assert saved["last"]["file"] == "syllo_autogen_y_count4.jsonl" and saved["last"]["level"] == 2
    assert autogen_state.next_seed(saved, 5) == 7 and autogen_state.next_seed(saved, 9) == 9
    assert autogen_state.totals(saved) == {"batches": 2, "examples": 7, "last": saved["last"]}
    home.autogen_state.write_text("{not json")
    with pytest.raises(ValueError):
        autogen_state.read_autogen_state(home)


def test_approvals_append_in_order_and_a_torn_last_line_is_skipped(home):
    assert approvals.read_approvals(home) == []
    change = [{"key": "base_model", "adapter": "/old", "config": "/new"}]
    first = approvals.make_record(who="ops", host="box", changes=change, adapter_generation=3, generation_id="g3")
    approvals.append_approval(home, first)
    approvals.append_approval(home, {**first, "who": "dev"})
    with open(home.root / "logs" / "approvals.jsonl", "a") as f:
        f.write('{"at": "torn')
    assert [r["who"] for r in approvals.read_approvals(home)] == ["ops", "dev"]
    assert set(first) == {"at", "who", "host", "changes", "adapter_generation", "generation_id"}
    assert first["changes"] == change and first["at"].endswith("Z")


def test_the_hashes_log_records_each_accepted_job_as_it_always_did(home):
    meta = {"id": "000001-chat", "sha256": "ab" * 32, "file": "chat.jsonl", "enqueued_at": "2026-11-30T10:00:00Z",
            "priority": "normal"}
    hashes.append_hash(home, meta)
    hashes.append_hash(home, {**meta, "id": "000002-chat"})
    lines = (home.root / "queue" / "hashes.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"sha256": "ab" * 32, "job_id": "000001-chat", "file": "chat.jsonl",
                                    "at": "2026-11-30T10:00:00Z"}
    with open(home.hashes, "a") as f:
        f.write('{"sha256": "to')
    assert [r["job_id"] for r in hashes.read_hashes(home)] == ["000001-chat", "000002-chat"]


def test_the_base_hash_cache_keeps_each_folder_under_its_stamp(tmp_path):
    cache_dir, a, b = tmp_path / "cache", tmp_path / "a", tmp_path / "b"
    assert base_hash.read_cache(cache_dir) == {}
    stamp = [["config.json", 2, 1764470000123456789, 7]]
    base_hash.write_cache(cache_dir, {}, a, stamp, "aa" * 32)
    base_hash.write_cache(cache_dir, base_hash.read_cache(cache_dir), b, stamp, "bb" * 32)
    on_disk = json.loads((cache_dir / "base_hash.json").read_text())
    assert on_disk == {str(a): {"stamp": stamp, "sha256": "aa" * 32}, str(b): {"stamp": stamp, "sha256": "bb" * 32}}
    cache = base_hash.read_cache(cache_dir)
    assert base_hash.cached_hash(cache, a, stamp) == "aa" * 32
    assert base_hash.cached_hash(cache, a, [["config.json", 3, 1764470000123456789, 7]]) is None
    assert base_hash.cached_hash(cache, tmp_path / "c", stamp) is None
