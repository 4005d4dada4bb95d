#!/usr/bin/env python3
"""Chaos: SIGKILL the daemon and the trainer at random moments while jobs flow, then prove nothing was lost.

    python3 bench/chaos.py --kills 200 [--jobs N] [--seed 1] [--trainer fast|real] [--real-steps N] [--work DIR]
                           [--json]

A home is made in ``--work`` (default: a temporary folder). Files are dropped into its inbox as the run goes;
the daemon runs with the stand-in trainer ``tests/tools/stand_in_trainer.py`` (``--trainer fast``: the real queue,
checkpoint and publish code with a hash chain for weights, so 200 kills take minutes) or the real trainer on the
embedded tiny model (``--trainer real``: about 10 s per trainer start here, so use fewer kills). After the last kill the
daemon is left to finish; then the shared invariant checker (``trainingd.checks.invariants``) runs and the report says:
kills (of the daemon, of the trainer), jobs, done, failed, lost (must be 0), duplicated (must be 0), resumed
from a checkpoint, and for ``fast`` whether the published adapter equals what an uninterrupted run of the same
jobs in the same order publishes. Exit 0 when nothing was lost or duplicated and every invariant holds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainingd.contracts.adapter_state import read_adapter_state, trained_entries  # noqa: E402 - imported once sys.path holds the repository
from trainingd.instance import is_daemon_running  # noqa: E402 - imported once sys.path holds the repository
from trainingd.checks.invariants import check_home, job_locations  # noqa: E402 - imported once sys.path holds the repository
from trainingd.paths import Home  # noqa: E402 - imported once sys.path holds the repository

sys.path.insert(0, str(REPO / "tests" / "tools"))
from stand_in_trainer import chain, read_weights  # noqa: E402 - imported once sys.path holds the repository

# The fast trainer: checkpoints every step, publishes the hash chain, never outlives its daemon.
FAST_TRAINER = {"step_s": 0.03, "checkpoints": True, "publish": True, "die_with_parent": True}


def drop(home: Home, name: str, lines: list[dict]) -> None:
    tmp = home.inbox / f".{name}.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    tmp.rename(home.inbox / name)


def chat(i: int, n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"question {i}.{k} about the queue?"},
                          {"role": "assistant", "content": f"answer {i}.{k}: files move by rename"}]}
            for k in range(n)]


class Chaos:
    def __init__(self, work: Path, args: argparse.Namespace):
        self.home = Home.at(work / "home")
        self.args = args
        self.rng = random.Random(args.seed)
        self.daemon: subprocess.Popen | None = None
        self.files: dict[str, int] = {}  # name -> chaos steps
        self.kills = {"daemon": 0, "trainer": 0}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRAININGD_")}
        self.env.update({"HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])})
        cfg = {"max_attempts": 100000, "stable_seconds": 0.2, "stop_grace_s": 30.0, "rescan_interval_s": 1.0}
        if args.trainer == "fast":
            self.env["TRAININGD_TRAINER"] = str(REPO / "tests" / "tools" / "stand_in_trainer.py")
        else:
            from trainingd.train.tiny_model import build_tiny_model

            model = build_tiny_model(work / "tiny-qwen3")
            # One optimizer step per two examples, a checkpoint every two steps: --real-steps is what it says.
            cfg.update(base_model=str(model), max_length=96, batch_size=2, gradient_accumulation=1, save_steps=2,
                       learning_rate=1e-3, epochs=1)
        self.home.root.mkdir(parents=True, exist_ok=True)
        (self.home.root / "config.json").write_text(json.dumps(cfg, indent=2))
        self.home.inbox.mkdir(exist_ok=True)

    # ------------------------------------------------------------------------------------------ processes
    def start_daemon(self) -> None:
        log = open(self.home.root / "chaos_daemon_stdout.log", "ab")
        self.daemon = subprocess.Popen(["nice", "-n", "10", sys.executable, str(REPO / "training_daemon.py"),
                                        "--home", str(self.home.root)], stdout=log, stderr=subprocess.STDOUT,
                                       env=self.env, cwd=REPO)
        log.close()

    def trainer_pid(self) -> int | None:
        try:
            pid = json.loads(self.home.trainer_record.read_text())["pid"]
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def kill(self) -> None:
        victim = self.rng.choice(("daemon", "trainer"))
        trainer = self.trainer_pid()
        for _ in range(30):  # a trainer is wanted: give the daemon a moment to start one
            if victim == "daemon" or trainer is not None:
                break
            time.sleep(0.1)
            trainer = self.trainer_pid()
        if trainer is None:
            victim = "daemon"
        if victim == "trainer":
            try:
                os.kill(trainer, signal.SIGKILL)
            except ProcessLookupError:
                return
        else:
            self.daemon.kill()
            self.daemon.wait()
            self.start_daemon()
        self.kills[victim] += 1

    def feed(self, more: bool = True) -> None:
        """Keep a few files waiting: while ``more``, up to --jobs in all (no --jobs: as many as the kills take)."""
        pending = sum(1 for places in job_locations(self.home).values() for p in places if p.startswith("pending"))
        waiting = pending + sum(1 for p in self.home.inbox.iterdir() if not p.name.startswith("."))
        limit = self.args.jobs if self.args.jobs is not None else (len(self.files) + 3 if more else 0)
        while waiting < 3 and len(self.files) < limit:
            i = len(self.files) + 1
            name = f"chaos-{i:04d}.jsonl"
            steps = self.rng.randint(3, 12) if self.args.trainer == "fast" else self.args.real_steps
            lines = ([{"stand_in": {**FAST_TRAINER, "steps": steps}, "n": i}] if self.args.trainer == "fast"
                     else chat(i, 2 * steps))
            drop(self.home, name, lines)
            self.files[name] = steps
            waiting += 1

    # ------------------------------------------------------------------------------------------ the run
    def run(self) -> dict:
        t0 = time.monotonic()
        self.start_daemon()
        lo, hi = self.args.min_gap, self.args.max_gap
        while sum(self.kills.values()) < self.args.kills:
            self.feed()
            time.sleep(self.rng.uniform(lo, hi))
            self.kill()
        # Let it finish: the rest of the files, then a clean stop.
        deadline = time.monotonic() + self.args.finish_s
        while time.monotonic() < deadline:
            self.feed(more=False)
            if (self.args.jobs is None or len(self.files) >= self.args.jobs) and self.settled():
                break
            if self.daemon.poll() is not None:
                self.start_daemon()
            time.sleep(0.5)
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        return self.report(time.monotonic() - t0)

    def settled(self) -> bool:
        if any(not p.name.startswith(".") for p in self.home.inbox.iterdir()):
            return False
        places = [p for ps in job_locations(self.home).values() for p in ps]
        return bool(places) and all(p in ("done", "failed") for p in places)

    def report(self, seconds: float) -> dict:
        problems = check_home(self.home, expect_files=self.files)
        by_name: dict[str, list[str]] = {}
        for job_id, places in job_locations(self.home).items():
            meta = json.loads((self.home.queue / places[0] / job_id / "job.json").read_text())
            by_name.setdefault(meta["original_name"], []).extend(places)
        lost = [n for n in self.files if n not in by_name]
        trained = trained_entries(read_adapter_state(self.home.current_model), self.home.current_model)
        counts: dict[str, int] = {}
        for t in trained:
            counts[t.get("file")] = counts.get(t.get("file"), 0) + 1
        duplicated = sorted({n for n, places in by_name.items() if places.count("done") > 1}
                            | {f for f, c in counts.items() if c > 1})
        log = self.home.training_log.read_text(errors="replace") if self.home.training_log.exists() else ""
        resumes = re.findall(r"resumed from \S*?/([^/\s]+)/step-\d+ at step", log)  # the job id of each resume
        out = {"trainer": self.args.trainer, "seconds": round(seconds, 1), "kills": sum(self.kills.values()),
               "kills_daemon": self.kills["daemon"], "kills_trainer": self.kills["trainer"], "jobs": len(self.files),
               "done": sum(p.count("done") for p in by_name.values()),
               "failed": sum(p.count("failed") for p in by_name.values()), "lost": len(lost),
               "duplicated": len(duplicated), "resumed_from_checkpoint": len(resumes),
               "jobs_resumed_from_checkpoint": len(set(resumes)),
               "invariant_problems": problems}
        if self.args.trainer == "fast":
            # An uninterrupted run trains the same jobs in the same order: fold their steps into the chain.
            h = ""
            job_of = {t.get("file"): t.get("job_id") for t in trained}
            for t in trained:
                for step in range(1, self.files.get(t.get("file"), 0) + 1):
                    h = chain(h, job_of[t.get("file")], step)
            out["adapter_equals_uninterrupted"] = read_weights(self.home.current_model) == h
        out["ok"] = (not lost and not duplicated and not problems and out.get("adapter_equals_uninterrupted", True)
                     and not is_daemon_running(self.home))
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/chaos.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=200, help="SIGKILLs to deliver (default 200)")
    p.add_argument("--jobs", type=int, help="files dropped in all (default: a few always waiting until the last "
                   "kill, so every kill lands on a working daemon)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--trainer", choices=("fast", "real"), default="fast")
    p.add_argument("--real-steps", type=int, default=4, help="optimizer steps of each real job (checkpoints every "
                   "2; longer jobs let more kills land after a checkpoint; default 4)")
    p.add_argument("--min-gap", type=float, default=0.1, help="shortest wait between kills, seconds (default 0.1)")
    p.add_argument("--max-gap", type=float, default=2.0, help="longest wait between kills, seconds (default 2)")
    p.add_argument("--finish-s", type=float, default=900, help="how long the daemon may take to finish after the "
                   "last kill (default 900)")
    p.add_argument("--work", type=Path, help="where the home goes (default: a temporary folder, removed after)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trainingd-chaos-") as tmp:
        work = a.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = Chaos(work, a).run()
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"chaos ({report['trainer']} trainer, seed {a.seed}): {report['kills']} kills (daemon "
              f"{report['kills_daemon']}, trainer {report['kills_trainer']}) in {report['seconds']:.0f}s; "
              f"jobs {report['jobs']}: done {report['done']}, failed {report['failed']}; lost {report['lost']}; "
              f"duplicated {report['duplicated']}; resumed from checkpoint {report['resumed_from_checkpoint']} times "
              f"({report['jobs_resumed_from_checkpoint']} jobs)"
              + (f"; adapter equals an uninterrupted run's: {report['adapter_equals_uninterrupted']}"
                 if "adapter_equals_uninterrupted" in report else ""))
        for problem in report["invariant_problems"]:
            print(f"  invariant broken: {problem}")
        print("ok" if report["ok"] else "FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
