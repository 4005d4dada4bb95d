"""The health commands catch each problem they name, each with the command that fixes it.

    ./run_tests.sh tests/faults/test_health.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fault_helpers import REPO, write_config
from trainingd.contracts.status import StatusWriter, compose_status

pytestmark = pytest.mark.faults


def init(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    subprocess.run([sys.executable, "-m", "trainingd", "init", "--home", str(root)], check=True, cwd=REPO,
                   capture_output=True)
    return root


def doctor(root: Path, *extra: str, command: str = "comprehensive_health_check.py") -> tuple[int, dict]:
    argv = ([sys.executable, str(REPO / command)] if command.endswith(".py")
            else [sys.executable, "-m", "trainingd", "doctor"])
    res = subprocess.run([*argv, "--home", str(root), "--json", *extra], capture_output=True, text=True, cwd=REPO)
    return res.returncode, json.loads(res.stdout)


def failing(report: dict) -> dict[str, list[dict]]:
    return {c["check"]: c["problems"] for c in report["checks"] if not c["ok"]}


def job(root: Path, state: str, job_id: str, **meta) -> Path:
    folder = root / "queue" / state / job_id
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text("{}\n")
    (folder / "job.json").write_text(json.dumps({"id": job_id, "file": "a.jsonl", "original_name": "a.jsonl",
                                                 "state": state.split("/")[0], "sha256": "ab" * 32, **meta}))
    return folder


def plant_config(root: Path) -> None:
    write_config(root, learnig_rate=0.1)


def plant_folders(root: Path) -> None:
    (root / "queue" / "done").rmdir()


def plant_base_model(root: Path) -> None:
    write_config(root, base_model=str(root / "no-such-model"))


def plant_daemon(root: Path) -> None:
    (root / ".daemon.pid").write_text(f"{os.getppid()}\n")  # a live process that is not a daemon of this home


def plant_status(root: Path) -> None:
    StatusWriter(root_home(root)).write(compose_status(daemon={"pid": 1, "version": "x", "started_at": "x",
                                                              "home": str(root)}, status="training"))


def plant_processing(root: Path) -> None:
    job(root, "processing", "000001-a")


def plant_temp_files(root: Path) -> None:
    (root / "status" / ".training_status.json.abcd1234.tmp").write_text("{")


def plant_checkpoints(root: Path) -> None:
    step = root / "current_model" / "checkpoints" / "000001-a" / "step-000002"
    step.mkdir(parents=True)
    (step / "COMPLETE").write_text("2\n")
    job(root, "pending/normal", "000001-a")


def plant_invariants(root: Path) -> None:
    job(root, "done", "000001-a")
    entry = {"job_id": "000001-a", "sha256": "ab" * 32}
    (root / "current_model" / "adapter_state.json").write_text(json.dumps({"trained": [entry, entry]}))


def root_home(root: Path):
    from trainingd.paths import Home

    return Home.at(root)


PLANTS = {"config": (plant_config, "config_validator.py"), "folders": (plant_folders, "trainingd init"),
          "base_model": (plant_base_model, "base_model"), "daemon": (plant_daemon, "rm "),
          "status": (plant_status, "launch_training_daemon.sh"),
          "processing": (plant_processing, "launch_training_daemon.sh"),
          "temp_files": (plant_temp_files, "rm -rf"), "checkpoints": (plant_checkpoints, "rm -r"),
          "invariants": (plant_invariants, "state_tracker.py")}


def test_a_fresh_home_is_healthy(tmp_path):
    root = init(tmp_path)
    code, report = doctor(root, "--min-free-gb", "0")
    assert code == 0, failing(report)
    assert {c["check"] for c in report["checks"]} >= set(PLANTS) | {"disk", "gpu"}


@pytest.mark.parametrize("check", sorted(PLANTS))
def test_each_planted_problem_is_caught_with_its_fix(tmp_path, check):
    root = init(tmp_path)
    plant, fix_words = PLANTS[check]
    plant(root)
    code, report = doctor(root, "--min-free-gb", "0")
    assert code == 1
    problems = failing(report)
    assert check in problems, problems
    assert all(p["fix"] for p in problems[check]) and fix_words in problems[check][0]["fix"]


def test_low_disk_is_caught_and_doctor_says_the_same(tmp_path):
    root = init(tmp_path)
    code, report = doctor(root, "--min-free-gb", "1000000", command="doctor")
    assert code == 1 and "disk" in failing(report)
    text = subprocess.run([sys.executable, str(REPO / "comprehensive_health_check.py"), "--home", str(root),
                           "--min-free-gb", "1000000"], capture_output=True, text=True, cwd=REPO)
    assert text.returncode == 1 and "FAIL disk" in text.stdout and "fix:" in text.stdout


def state_check(root: Path) -> tuple[int, dict]:
    res = subprocess.run([sys.executable, str(REPO / "state_tracker.py"), "--home", str(root), "--check", "--json"],
                         capture_output=True, text=True, cwd=REPO)
    return res.returncode, json.loads(res.stdout)


def test_state_tracker_finds_a_status_that_disagrees_with_the_queue(tmp_path):
    root = init(tmp_path)
    assert state_check(root)[0] == 0
    StatusWriter(root_home(root)).write(compose_status(
        daemon={"pid": 1, "version": "x", "started_at": "x", "home": str(root)}, status="stopped",
        queue={"pending": {"high": 0, "normal": 2, "low": 0}, "processing": 0, "done": 0, "failed": 0}))
    code, report = state_check(root)
    assert code == 1 and any("pending" in p["problem"] for p in report["problems"])


def test_state_tracker_finds_checkpoints_of_a_finished_job_and_a_job_in_two_folders(tmp_path):
    root = init(tmp_path)
    job(root, "done", "000001-a")
    job(root, "failed", "000001-a")
    (root / "current_model" / "checkpoints" / "000001-a").mkdir(parents=True)
    code, report = state_check(root)
    text = " ".join(p["problem"] for p in report["problems"])
    assert code == 1 and "2 state folders" in text and "checkpoints of job 000001-a" in text


@pytest.mark.slow
def test_verify_checkpoint_resume_passes_here_and_reports_a_run_that_fails(tmp_path, tiny_model):
    cmd = [sys.executable, str(REPO / "verify_checkpoint_resume.py"), "--model", str(tiny_model), "--json"]
    res = subprocess.run([*cmd, "--work", str(tmp_path / "ok")], capture_output=True, text=True, cwd=REPO)
    report = json.loads(res.stdout)
    assert res.returncode == 0 and report["ok"], report
    assert report["max_abs_difference"] <= 1e-6 and "step-000002" in report["resumed_from"]
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    cmd[cmd.index(str(tiny_model))] = str(broken)
    res = subprocess.run([*cmd, "--work", str(tmp_path / "broken")], capture_output=True, text=True, cwd=REPO)
    report = json.loads(res.stdout)
    assert res.returncode == 1 and "the uninterrupted run exited" in report["error"] and report["log"]
