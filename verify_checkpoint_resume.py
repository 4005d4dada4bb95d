#!/usr/bin/env python3
"""Check that exact resume works on this machine: train a tiny file once through, then again killed (SIGKILL at a
step after a checkpoint) and resumed, and compare the two adapters tensor by tensor.

    python3 verify_checkpoint_resume.py [--model DIR] [--work DIR] [--examples N] [--kill-at-step K]
                                        [--tolerance T] [--json]

The model defaults to the embedded tiny model, built in the work folder; each run is ``train.py`` in its own
process (the trainer the daemon runs). Exit 0 when the resumed adapter equals the uninterrupted one within the
tolerance (default 1e-6; on a CPU in fp32 it is bitwise equal), 1 when it does not or a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from trainingd.checks.invariants import adapter_difference

REPO = Path(__file__).resolve().parent
ARGS = ["--epochs", "1", "--max-length", "96", "--batch-size", "2", "--gradient-accumulation", "1",
        "--save-steps", "2", "--learning-rate", "1e-3", "--lora-r", "4", "--lora-alpha", "8"]


def write_data(path: Path, n: int) -> None:
    rng = random.Random(7)
    words = "the model learns to answer questions about data files and the queue quickly".split()
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
            a = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"{q} {i}?"},
                                             {"role": "assistant", "content": a}]}) + "\n")


def train(data: Path, model: Path, out: Path, *extra: str, crash_at: str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRAININGD_CRASH_AT", "TRAININGD_FAIL_AT")}
    env.update({"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
    if crash_at:
        env["TRAININGD_CRASH_AT"] = crash_at
    res = subprocess.run([sys.executable, str(REPO / "train.py"), "--dataset", str(data), "--model", str(model),
                          "--output-dir", str(out), *ARGS, *extra], env=env, cwd=REPO, capture_output=True,
                         text=True)
    return res.returncode, res.stdout + res.stderr


def verify(work: Path, model: Path | None, examples: int, kill_at: int, tolerance: float) -> dict:
    if model is None:
        from trainingd.train.tiny_model import build_tiny_model

        model = build_tiny_model(work / "tiny-qwen3")
    data = work / "data.jsonl"
    write_data(data, examples)
    report: dict = {"model": str(model), "examples": examples, "kill_at_step": kill_at, "tolerance": tolerance,
                    "ok": False}
    code, log = train(data, model, work / "uninterrupted")
    if code != 0:
        return {**report, "error": f"the uninterrupted run exited {code}", "log": log[-2000:]}
    code, log = train(data, model, work / "resumed", crash_at=f"step:{kill_at}")
    if code != -signal.SIGKILL:
        return {**report, "error": f"the run to be killed exited {code} before step {kill_at} (too few examples?)",
                "log": log[-2000:]}
    code, log = train(data, model, work / "resumed", "--resume")
    if code != 0:
        return {**report, "error": f"the resumed run exited {code}", "log": log[-2000:]}
    resumed_from = next((line.split("resumed from ", 1)[1] for line in log.splitlines() if "resumed from " in line),
                        None)
    if resumed_from is None:
        return {**report, "error": "the second run did not resume from a checkpoint", "log": log[-2000:]}
    diff = adapter_difference(work / "uninterrupted", work / "resumed")
    return {**report, "resumed_from": resumed_from, "max_abs_difference": diff, "ok": diff <= tolerance}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="verify_checkpoint_resume.py", description=__doc__.split("\n\n")[0],
                                epilog="Exit 0: the resumed adapter equals the uninterrupted one; 1: it does not.")
    p.add_argument("--model", type=Path, help="base model folder (default: the embedded tiny model, built here)")
    p.add_argument("--work", type=Path, help="folder for the runs (default: a temporary folder, removed after)")
    p.add_argument("--examples", type=int, default=16, help="examples in the generated file (default 16: 8 steps)")
    p.add_argument("--kill-at-step", type=int, default=3, help="SIGKILL the first run at this step (default 3)")
    p.add_argument("--tolerance", type=float, default=1e-6, help="largest allowed difference (default 1e-6)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="verify-resume-") as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = verify(work, a.model, a.examples, a.kill_at_step, a.tolerance)
    if a.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(f"ok: killed at step {a.kill_at_step}, resumed from {report['resumed_from']}; the adapter equals the "
              f"uninterrupted run's (largest difference {report['max_abs_difference']:.3g}, tolerance "
              f"{a.tolerance:g})")
    else:
        why = report.get("error") or f"adapters differ by {report['max_abs_difference']:.3g}"
        print(f"FAILED: {why}")
        if report.get("log"):
            print(report["log"])
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
