#!/usr/bin/env python3
"""How fast the monitor answers for a home that has trained a long stream: page load and API latency.

    .venv/bin/python bench/monitor_load.py [--jobs 1000] [--steps 50] [--home DIR] [--keep]

Builds a home of ``--jobs`` finished jobs through the product's own writers (the queue moves each file
inbox -> pending -> processing -> done, one history line, ``--steps`` metrics rows and layer reports per job,
an evaluation every 10 jobs: what a stream through the daemon leaves behind), then serves it and measures in
Debian's Chromium the time from navigation until the jobs table shows its first page and the loss chart has drawn
the whole life, and the latency of ``/api/jobs``, ``/api/metrics?axis=examples`` and ``/api/layers`` (median of
20, first call apart). Prints one table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainingd.atomic_ops import append_jsonl  # noqa: E402 - needs the path above
from trainingd.contracts.layer_activity import make_doc  # noqa: E402
from trainingd.contracts.layer_history import LayerHistory  # noqa: E402
from trainingd.contracts.status import append_history  # noqa: E402
from trainingd.jobqueue import JobQueue  # noqa: E402
from trainingd.monitor.browser import CHROMIUM, watch_page  # noqa: E402
from trainingd.monitor.server import serve_in_thread  # noqa: E402
from trainingd.paths import Home  # noqa: E402

MODULES = [f"model.layers.{i}.{m}" for i in range(30) for m in ("self_attn.q_proj", "self_attn.k_proj",
                                                                  "self_attn.v_proj", "self_attn.o_proj",
                                                                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]


def build_home(root: Path, jobs: int, steps: int) -> Home:
    home = Home.at(root)
    for d in (home.status_dir, root / "src"):
        d.mkdir(parents=True, exist_ok=True)
    queue = JobQueue(home)
    layers = LayerHistory(home.layer_history)
    t = time.time() - jobs * (steps + 30)
    for j in range(jobs):
        src = root / "src" / f"stream_{j:05d}.jsonl"
        src.write_text(json.dumps({"messages": [{"role": "user", "content": f"q{j}"},
                                                {"role": "assistant", "content": f"a{j}"}]}) + "\n")
        job = queue.add(src, source="cli")
        job = queue.claim_next()
        for s in range(1, steps + 1):
            t += 1.0
            append_jsonl(home.metrics, {"t": t, "job_id": job.id, "step": s, "epoch": 0,
                                        "loss": 2.0 / (1 + j + s / steps),
                                        "learning_rate": 1e-4, "grad_norm": 1.0, "tokens_per_s": 300.0,
                                        "tokens_seen": 256 * s, "examples_done": 8 * s})
            if s % 10 == 0:
                rows = [{"name": n, "layer": k // 7, "module": n.rsplit(".", 1)[-1], "update_norm": 0.01 * (j + 1),
                         "delta_norm": 0.001, "grad_norm": 0.1} for k, n in enumerate(MODULES)]
                layers.append(make_doc(rows, job_id=job.id, step=s, previous_step=s - 10))
        queue.complete(job, result={"steps": steps})
        append_history(home, job_id=job.id, file=src.name, state="done", result="ok",
                       summary={"steps": steps, "loss": 1.0 / (1 + j), "tokens": 256 * steps, "examples": 8 * steps},
                       seconds=float(steps))
        if j % 10 == 9:
            append_jsonl(home.history, {"kind": "eval", "job_id": job.id, "exact_match": min(1.0, j / jobs),
                                        "correct": j, "total": jobs, "trained_examples": 8 * steps * (j + 1)})
        t += 30.0
    return home


def latency(url: str, n: int = 20) -> tuple[float, float]:
    """(first call, median of the next n) in milliseconds."""
    times = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
        times.append((time.perf_counter() - t0) * 1000)
    return times[0], statistics.median(times[1:])


def page_load_ms(base: str, jobs_rows: int) -> float:
    from playwright.sync_api import sync_playwright

    ready = (f"document.querySelectorAll('#jobs-body tr').length >= {jobs_rows} && "
             "window.__trainingd.charts.loss.data[0].length > 0")
    with sync_playwright() as pw, watch_page(pw, f"{base}/live_monitor_ui_v2.html") as watch:
        watch.page.wait_for_function(ready, timeout=60_000)  # the browser is up and the server warm
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            watch.page.reload(wait_until="load")
            watch.page.wait_for_function(ready, timeout=60_000)
            times.append((time.perf_counter() - t0) * 1000)
        if watch.console_errors:
            print("console errors:", watch.console_errors)
        return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=50, help="metrics rows per job")
    ap.add_argument("--home", type=Path, default=None, help="build here instead of a temporary folder")
    ap.add_argument("--keep", action="store_true", help="keep the home")
    args = ap.parse_args(argv)
    root = args.home or Path(tempfile.mkdtemp(prefix="monitor_load_")) / "home"
    t0 = time.perf_counter()
    home = build_home(root, args.jobs, args.steps)
    built = time.perf_counter() - t0
    server, _ = serve_in_thread(home, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        rows = {"/api/jobs?limit=20": latency(f"{base}/api/jobs?limit=20"),
                "/api/metrics?axis=examples&window=all": latency(f"{base}/api/metrics?axis=examples&window=all"),
                "/api/metrics?axis=time&window=jobs:20": latency(f"{base}/api/metrics?axis=time&window=jobs:20"),
                "/api/layers": latency(f"{base}/api/layers")}
        load = page_load_ms(base, min(20, args.jobs)) if CHROMIUM.exists() else None
    finally:
        server.shutdown()
        server.server_close()
    print(f"home: {args.jobs} jobs, {args.jobs * args.steps} metrics rows, built in {built:.1f} s ({root})")
    print(f"{'request':42} {'first ms':>10} {'median ms':>10}")
    for path, (first, med) in rows.items():
        print(f"{path:42} {first:10.1f} {med:10.1f}")
    print(f"page load (median of 3 reloads) until the jobs table and the loss chart are drawn: "
          f"{'no chromium' if load is None else f'{load:.0f} ms'}")
    if not args.keep and args.home is None:
        shutil.rmtree(root.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
