"""Make docs/monitor.png and docs/monitor_layers.png: both monitor pages after a real stream of small files.

    .venv/bin/python docs/make_screenshot.py [--jobs 24] [--out docs/monitor.png] [--layers-out docs/monitor_layers.png]

It builds the tiny model in a temporary home with the gate on (a small held-out file) and a layer report every
step, drops ``--jobs`` small chat files (and a broken one, to show a failure with its reason) into inbox/, lets the
real daemon drain them through the real trainer (``training_daemon.py --once``), then serves the home and opens both
pages in /usr/bin/chromium through ``trainingd.monitor.browser`` (the browser tests' code).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainingd.monitor.browser import chart_points, wait_until, watch_page  # noqa: E402
from trainingd.monitor.server import serve_in_thread  # noqa: E402
from trainingd.paths import Home  # noqa: E402
from trainingd.train.tiny_model import build_tiny_model  # noqa: E402

log = logging.getLogger("make_screenshot")
WORDS = "the model learns to answer questions about data files and the queue quickly".split()


def chat(n: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(json.dumps({"messages": [{"role": "user", "content": f"{q} {i}?"},
                                              {"role": "assistant", "content": a}]}))
    return "\n".join(lines) + "\n"


def make_home(root: Path, jobs: int) -> Path:
    model = build_tiny_model(root / "models" / "tiny-qwen3")
    (root / "heldout.jsonl").write_text(chat(8, 999))
    (root / "config.json").write_text(json.dumps({
        "base_model": str(model), "model_display_name": "tiny-qwen3 (demo)", "max_length": 128, "batch_size": 2,
        "gradient_accumulation": 1, "learning_rate": 1e-3, "epochs": 1, "save_steps": 200, "eval_fraction": 0.25,
        "eval_steps": 2, "layer_stats_steps": 1,
        "evaluation": {"eval_file": "heldout.jsonl", "max_new_tokens": 4, "batch_size": 8},
        "gate": {"enabled": True, "max_forgetting": None, "max_rejections_in_row": 0}}, indent=2))
    inbox = root / "inbox"
    inbox.mkdir()
    (inbox / "broken.jsonl").write_text("{not json\n")
    for i in range(jobs):
        (inbox / f"stream_{i:03d}.jsonl").write_text(chat(8, i))
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=24)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "monitor.png")
    ap.add_argument("--layers-out", type=Path, default=REPO / "docs" / "monitor_layers.png")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="trainingd-demo-") as tmp:
        home = make_home(Path(tmp) / "home", args.jobs)
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home), "--once"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True)
        log.info("the stream of %d files took %.0f s", args.jobs, time.monotonic() - t0)
        server, _ = serve_in_thread(Home.at(home), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            with sync_playwright() as pw:
                with watch_page(pw, f"{base}/live_monitor_ui_v2.html") as watch:
                    page = watch.page
                    wait_until(lambda: chart_points(page, "loss") > 0, "the loss chart to draw points")
                    wait_until(lambda: page.locator("#jobs-body tr").count() > 0, "the jobs table")
                    time.sleep(2.5)  # one more poll of the queue, system and evaluations
                    page.screenshot(path=str(args.out), full_page=True)
                    errors = watch.console_errors + watch.foreign_requests()
                with watch_page(pw, f"{base}/layer_activity_monitor.html") as watch:
                    page = watch.page
                    wait_until(lambda: page.evaluate("__layers.charts.life ? __layers.charts.life.data[0].length : 0"),
                               "the life chart")
                    time.sleep(1.0)
                    page.screenshot(path=str(args.layers_out), full_page=True)
                    errors += watch.console_errors + watch.foreign_requests()
            if errors:
                log.error("console errors or foreign requests: %s", errors)
                return 1
        finally:
            server.shutdown()
            server.server_close()
    log.info("wrote %s and %s", args.out, args.layers_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
