"""A soak that stands in for weeks: the real daemon, monitor and generator at the fastest pace this CPU allows.

    nice -n 5 .venv/bin/python bench/soak.py --minutes 10 [--work DIR] [--out docs/soak.json] [--plot docs/soak.png]

Many small jobs (dropped into inbox/ and asked of the generator by auto_generate) run through the stand-in trainer
(``tests/tools/stand_in_trainer.py``: the real checkpoint and publish code, no model), with snapshots pruned
after every job,
``trainingd clean`` with a retention of seconds every minute, a controller command every few seconds (status,
pause, resume, queue list) and a monitor client polling ``/api/status``, ``/api/metrics`` and ``/api/logs``.
Every ``--sample-s`` it samples each long-lived process's RSS and open descriptors, the home's disk use and file
counts (queue/done, where one job.json per job stays forever, and the records -- logs, history, the sealed
segments of the trained list, which grow with the jobs by design and rotate by day -- apart from the rest), and the
latency of
``training_controller.py status`` and ``/api/status``. It writes JSON (``samples`` plus a ``summary`` of growth
after warm-up) and, with ``--plot``, a figure (matplotlib, from the bench extra).

``run_soak`` is what ``tests/test_soak.py`` runs for a minute; the figures in docs/ come from a longer run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from collections.abc import Callable
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from trainingd.paths import Home  # noqa: E402

PROCESSES = ("daemon", "monitor", "generator")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop(home: Home, name: str, steps: int) -> None:
    tmp = home.inbox / f".{name}.tmp"
    lines = [{"chaos_steps": steps}] + [
        {"messages": [{"role": "user", "content": f"soak question {name} {k}?"},
                      {"role": "assistant", "content": f"answer {k}"}]} for k in range(3)]
    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    tmp.rename(home.inbox / name)


def folder_usage(root: Path, skip: Path | None = None, *, only: Callable[[Path], bool] | None = None,
                 seen: set | None = None) -> tuple[int, int]:
    """(bytes, files) under ``root``, not following links, leaving ``skip`` out; with ``only``, just the files it
    accepts. A file hard-linked in several places (sealed segments in snapshots) counts once per ``seen``."""
    size = files = 0
    seen = set() if seen is None else seen
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for n in filenames:
            path = Path(dirpath) / n
            if only is not None and not only(path):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            size += st.st_size
            files += 1
    return size, files


def is_record(home: Home, path: Path) -> bool:
    """The home's per-job records: append-only logs that rotate by day (logs/, status/*.jsonl) and the sealed
    segments of the adapter's list of trained jobs. They grow with the jobs by design; the rest must not."""
    rel = path.relative_to(home.root).parts
    return rel[0] == "logs" or (rel[0] == "status" and path.suffix == ".jsonl" and len(rel) == 2) \
        or "trained" in rel[:-1] and path.suffix == ".json"


def proc_sample(pid: int | None) -> dict[str, Any]:
    try:
        p = psutil.Process(pid)
        return {"rss_mib": round(p.memory_info().rss / 2**20, 2), "fds": p.num_fds(),
                "threads": p.num_threads()}
    except (psutil.Error, TypeError, ValueError):
        return {"rss_mib": None, "fds": None, "threads": None}


class Soak:
    def __init__(self, work: Path, *, sample_s: float, step_s: float, seed: int = 0, segment_size: int | None = None):
        self.work = work
        self.home = Home.at(work / "home")
        self.sample_s = sample_s
        self.rng = random.Random(seed)
        self.procs: dict[str, subprocess.Popen] = {}
        self.samples: list[dict[str, Any]] = []
        self.errors: dict[str, int] = {"monitor": 0, "controller": 0}
        self.commands = 0
        self.last_error: Any = None
        self.last_monitor_error: Any = None
        self.last_http_error: str | None = None
        self.polls = 0
        self.dropped = 0
        self.stop_event = threading.Event()
        self.gen_port, self.mon_port = free_port(), free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TRAININGD_")}
        self.env.update({"HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")]),
                         "TRAININGD_TRAINER": str(REPO / "tests" / "tools" / "stand_in_trainer.py"),
                         "TRAININGD_STAND_IN": json.dumps({"steps": 3, "step_s": step_s, "publish": True,
                                                           "checkpoints": True})})
        if segment_size:  # a short soak seals the trained list as an hour's does
            self.env["TRAININGD_TRAINED_SEGMENT_SIZE"] = str(segment_size)
        cfg = {"stable_seconds": 0.2, "rescan_interval_s": 1.0, "keep_snapshots": 3, "max_attempts": 5,
               "auto_generate": {"enabled": True, "url": f"http://127.0.0.1:{self.gen_port}", "count": 4,
                                 "min_interval_s": 2.0, "max_pending_generated": 2},
               "retention": {"enabled": True, "keep_done_days": 30 / 86400, "log_retention_days": 1.0}}
        self.home.root.mkdir(parents=True, exist_ok=True)
        (self.home.root / "config.json").write_text(json.dumps(cfg, indent=2))
        self.home.inbox.mkdir(exist_ok=True)

    # -------------------------------------------------------------------------------------- processes
    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.work / f"soak_{name}.out", "ab")  # beside the home: what it measures is the home alone
        self.procs[name] = subprocess.Popen(["nice", "-n", "10", sys.executable, *argv], stdout=log,
                                            stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        log.close()

    def start(self) -> None:
        self.spawn("generator", ["-m", "trainingd", "generator", "--port", str(self.gen_port)])
        self.spawn("daemon", [str(REPO / "training_daemon.py"), "--home", str(self.home.root)])
        self.spawn("monitor", [str(REPO / "launch_live_monitor.py"), "--home", str(self.home.root),
                               "--port", str(self.mon_port)])

    def stop(self, threads: list[threading.Thread] = ()) -> None:
        self.stop_event.set()
        for th in threads:  # a controller command in flight finishes before the daemon goes
            th.join(timeout=150)
        for name in ("monitor", "generator", "daemon"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def pid(self, name: str) -> int | None:
        """The long-lived process itself (``nice`` execs it, so the Popen pid is the Python process)."""
        p = self.procs.get(name)
        return p.pid if p is not None and p.poll() is None else None

    # -------------------------------------------------------------------------------------- load
    def http(self, path: str, timeout: float = 30.0) -> tuple[float | None, bytes]:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.mon_port}{path}", timeout=timeout) as r:
                body = r.read()
            return time.perf_counter() - t0, body
        except OSError as e:
            self.last_http_error = f"{path}: {e}"
            return None, b""

    def monitor_client(self) -> None:
        paths = ("/api/status", "/api/metrics?max_points=500", "/api/logs?tail=50", "/api/queue")
        i = 0
        while not self.stop_event.wait(0.5):
            took, _ = self.http(paths[i % len(paths)])
            i += 1
            self.polls += 1
            if took is None and i > 10:  # the monitor may still be starting for the first few polls
                self.errors["monitor"] += 1
                self.last_monitor_error = (paths[(i - 1) % len(paths)], round(time.monotonic(), 1))

    def controller(self) -> None:
        cycle = (["training_controller.py", "status"], ["training_controller.py", "pause"],
                 ["training_queue.py", "list", "--state", "pending"], ["training_controller.py", "resume"],
                 ["training_queue.py", "status"])
        from trainingd.instance import is_daemon_running

        while not is_daemon_running(self.home) and not self.stop_event.wait(0.5):
            pass  # a slow start on a loaded machine: commands begin once the daemon holds its lock
        i = 0
        while not self.stop_event.wait(3.0):
            i += 1
            if i % 20 == 0:  # retention with a policy of seconds, as the daily run would apply it
                argv = ["-m", "trainingd", "--home", str(self.home.root), "clean"]
            else:
                script, *rest = cycle[i % len(cycle)]
                argv = [str(REPO / script), *rest, "--home", str(self.home.root)]
            r = subprocess.run([sys.executable, *argv], capture_output=True, env=self.env, cwd=REPO, timeout=120)
            self.commands += 1
            if r.returncode != 0:
                self.errors["controller"] += 1
                self.last_error = (argv, r.stdout[-300:], r.stderr[-300:])

    def feeder(self) -> None:
        while not self.stop_event.wait(0.5):
            try:
                waiting = sum(1 for p in self.home.inbox.iterdir() if not p.name.startswith("."))
                waiting += sum(1 for prio in ("high", "normal", "low") for _ in self.home.pending(prio).iterdir())
            except OSError:
                continue
            # An empty queue now and then, so auto_generate asks the generator for a batch too.
            if waiting == 0 and self.rng.random() < 0.7:
                self.dropped += 1
                drop(self.home, f"soak-{self.dropped:06d}.jsonl", self.rng.randint(2, 5))

    # -------------------------------------------------------------------------------------- samples
    def sample(self, t0: float) -> dict[str, Any]:
        t = time.perf_counter()
        r = subprocess.run([sys.executable, str(REPO / "training_controller.py"), "status", "--json", "--home",
                            str(self.home.root)], capture_output=True, env=self.env, cwd=REPO, timeout=120)
        status_s = time.perf_counter() - t if r.returncode == 0 else None
        api_s, _ = self.http("/api/status")
        seen: set = set()
        records_bytes, records_files = folder_usage(self.home.root, skip=self.home.done, seen=seen,
                                                    only=lambda p: is_record(self.home, p))
        rest_bytes, rest_files = folder_usage(self.home.root, skip=self.home.done, seen=seen)
        done_bytes, done_files = folder_usage(self.home.done)
        try:
            done_jobs = sum(1 for p in self.home.done.iterdir() if p.is_dir())
        except OSError:
            done_jobs = 0
        row = {"t_s": round(time.monotonic() - t0, 2), "done_jobs": done_jobs,
               "home_bytes": records_bytes + rest_bytes + done_bytes,
               "home_files": records_files + rest_files + done_files, "records_bytes": records_bytes,
               "records_files": records_files, "rest_bytes": rest_bytes, "rest_files": rest_files,
               "done_bytes": done_bytes,
               "done_files": done_files, "status_cli_s": status_s, "api_status_s": api_s}
        for name in PROCESSES:
            row[name] = proc_sample(self.pid(name))
        return row

    def run(self, seconds: float) -> dict[str, Any]:
        t0 = time.monotonic()
        self.start()
        threads = [threading.Thread(target=f, daemon=True) for f in (self.monitor_client, self.controller,
                                                                     self.feeder)]
        for th in threads:
            th.start()
        try:
            while time.monotonic() - t0 < seconds:
                self.samples.append(self.sample(t0))
                dead = [n for n, p in self.procs.items() if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"{', '.join(dead)} exited during the soak (see {self.work}/soak_*.out)")
                time.sleep(max(0.0, self.sample_s - (time.monotonic() - t0 - self.samples[-1]["t_s"])))
        finally:
            self.stop(threads)
        return report(self, time.monotonic() - t0)


def _values(samples: list[dict], key: str, sub: str | None = None) -> list[float]:
    out = []
    for s in samples:
        v = s[key][sub] if sub else s[key]
        if v is not None:
            out.append(float(v))
    return out


def growth(samples: list[dict], warmup: float = 0.3) -> dict[str, Any]:
    """For each series: its value at the end of warm-up and at the end, the largest value after warm-up, and its
    slope per 1,000 jobs. Medians of the first and last fifth after warm-up, so one slow sample does not read as
    growth."""
    after = samples[int(len(samples) * warmup):]
    out: dict[str, Any] = {}
    series = [(f"{n}.{k}", n, k) for n in PROCESSES for k in ("rss_mib", "fds", "threads")]
    series += [(k, k, None) for k in ("rest_bytes", "rest_files", "records_bytes", "done_files", "status_cli_s",
                                      "api_status_s")]
    for label, key, sub in series:
        vals = _values(after, key, sub)
        if len(vals) < 5:
            continue
        fifth = max(1, len(vals) // 5)
        first, last = sorted(vals[:fifth])[fifth // 2], sorted(vals[-fifth:])[fifth // 2]
        out[label] = {"after_warmup": first, "end": last, "max": max(vals), "change": last - first}
        jobs = [s["done_jobs"] for s in after if (s[key][sub] if sub else s[key]) is not None]
        if len(set(jobs)) > 1:  # least squares over every sample: what a thousand more jobs would add
            out[label]["per_1000_jobs"] = statistics.linear_regression(jobs, vals).slope * 1000
    jobs = _values(after, "done_jobs")
    if len(jobs) >= 2 and jobs[-1] > jobs[0]:
        df = _values(after, "done_files")
        out["done_files_per_job"] = (df[-1] - df[0]) / (jobs[-1] - jobs[0]) if len(df) >= 2 else None
    return out


def biggest_files(root: Path, skip: Path, n: int = 6) -> list[tuple[str, int]]:
    sizes = []
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip:
            dirnames[:] = []
            continue
        for f in filenames:
            p = Path(dirpath) / f
            try:
                sizes.append((str(p.relative_to(root)), p.lstat().st_size))
            except OSError:
                continue
    return sorted(sizes, key=lambda x: -x[1])[:n]


def report(soak: Soak, seconds: float) -> dict[str, Any]:
    s = soak.samples
    summary = growth(s)
    after = s[int(len(s) * 0.3):]
    jobs = _values(after, "done_jobs")
    if len(jobs) >= 2 and jobs[-1] > jobs[0]:
        # The records (append-only logs, history, sealed segments) grow with the jobs by design; the rest of the
        # home (snapshots, the adapter's state, status files) must not.
        for key in ("rest_bytes", "records_bytes"):
            v = _values(after, key)
            if len(v) == len(jobs):
                summary[f"{key}_per_job"] = (v[-1] - v[0]) / (jobs[-1] - jobs[0])
    return {"seconds": round(seconds, 1), "samples": s, "jobs_done": s[-1]["done_jobs"] if s else 0,
            "files_dropped": soak.dropped, "controller_commands": soak.commands, "monitor_polls": soak.polls,
            "errors": soak.errors, "last_error": repr(soak.last_error) if soak.last_error else None,
            "last_http_error": soak.last_http_error, "summary": summary,
            "biggest_files": biggest_files(soak.home.root, soak.home.done), "cpu_count": os.cpu_count()}


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = doc["samples"]
    t = [r["t_s"] / 60 for r in s]
    fig, ax = plt.subplots(2, 2, figsize=(11, 7))
    for name in PROCESSES:
        ax[0, 0].plot(t, [r[name]["rss_mib"] for r in s], label=name)
        ax[0, 1].plot(t, [r[name]["fds"] for r in s], label=name)
    ax[0, 0].set_title("RSS (MiB)")
    ax[0, 1].set_title("open descriptors")
    ax[1, 0].plot(t, [r["rest_bytes"] / 2**20 for r in s], label="home without queue/done and records (MiB)")
    ax[1, 0].plot(t, [r.get("records_bytes", 0) / 2**20 for r in s], label="records: logs, history, ledger (MiB)")
    ax[1, 0].plot(t, [r["rest_files"] / 100 for r in s], label="its files / 100")
    ax[1, 0].plot(t, [r["done_jobs"] / 100 for r in s], label="jobs done / 100")
    ax[1, 0].set_title("home")
    ax[1, 1].plot(t, [(r["status_cli_s"] or 0) * 1000 for r in s], label="training_controller.py status")
    ax[1, 1].plot(t, [(r["api_status_s"] or 0) * 1000 for r in s], label="/api/status")
    ax[1, 1].set_title("latency (ms)")
    for a in ax.flat:
        a.set_xlabel("minutes")
        a.legend(fontsize=8)
    fig.suptitle(f"trainingd soak: {doc['jobs_done']} jobs in {doc['seconds'] / 60:.1f} min, "
                 f"{doc['controller_commands']} controller commands, {doc['monitor_polls']} monitor polls")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def run_soak(seconds: float, work: Path | None = None, *, sample_s: float = 5.0, step_s: float = 0.02,
             segment_size: int | None = None) -> dict:
    """Run the soak for ``seconds`` in ``work`` (kept) or a temporary folder (removed); returns the report.
    The home is ``work/home``; the processes are stopped (SIGTERM) before this returns."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="trainingd-soak-")) if own else Path(work)
    try:
        return Soak(work, sample_s=sample_s, step_s=step_s, segment_size=segment_size).run(seconds)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--sample-s", type=float, default=10.0)
    p.add_argument("--step-s", type=float, default=0.02, help="seconds per step of the stand-in trainer")
    p.add_argument("--work", type=Path, help="keep the home here (default: a temporary folder, removed)")
    p.add_argument("--out", type=Path, help="write the JSON here")
    p.add_argument("--plot", type=Path, help="write the figure here (needs matplotlib)")
    a = p.parse_args(argv)
    doc = run_soak(a.minutes * 60, a.work, sample_s=a.sample_s, step_s=a.step_s)
    if a.out:
        a.out.write_text(json.dumps(doc, indent=1))
    if a.plot:
        plot(doc, a.plot)
    print(json.dumps({k: v for k, v in doc.items() if k != "samples"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
