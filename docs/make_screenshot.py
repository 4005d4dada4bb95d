"""Make docs/monitor.png: the monitor page during a real (tiny) training, as the browser test sees it.

    .venv/bin/python docs/make_screenshot.py [--out docs/monitor.png] [--progress 60]

It builds the tiny model in a temporary home, queues a chat file (and a broken one, to show a failure with its
reason), starts ``training_daemon.py`` and the monitor, opens the page in /usr/bin/chromium through
``trainingd.monitor.browser`` (the test's code) and saves a screenshot once the first file is ``--progress``
percent trained.
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

from trainingd.monitor.browser import chart_points, text, wait_until, watch_page  # noqa: E402
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


def make_home(root: Path) -> Path:
    model = build_tiny_model(root / "models" / "tiny-qwen3")
    (root / "config.json").write_text(json.dumps({
        "base_model": str(model), "model_display_name": "tiny-qwen3 (demo)", "max_length": 128, "batch_size": 2,
        "gradient_accumulation": 1, "learning_rate": 1e-3, "epochs": 2, "save_steps": 200, "eval_fraction": 0.1,
        "eval_steps": 40}, indent=2))
    inbox = root / "inbox"
    inbox.mkdir()
    (inbox / "broken.jsonl").write_text("{not json\n")
    (inbox / "customer_chats.jsonl").write_text(chat(1500, 0))
    (inbox / "faq_answers.jsonl").write_text(chat(200, 1))
    return root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "monitor.png")
    ap.add_argument("--progress", type=float, default=60.0, help="percent of the first file trained before the shot")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="trainingd-demo-") as tmp:
        home = make_home(Path(tmp) / "home")
        daemon = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        server, _ = serve_in_thread(Home.at(home), "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        try:
            with sync_playwright() as pw, watch_page(pw, url) as watch:
                page = watch.page
                wait_until(lambda: chart_points(page, "loss") > 0, "the loss chart to draw points")
                wait_until(lambda: float(text(page, "progress-text").rstrip("%") or 0) >= args.progress
                           if text(page, "progress-text") != "–" else False, "the first file's progress",
                           limit_s=900)
                time.sleep(1.5)  # one more poll of the queue and system
                page.screenshot(path=str(args.out), full_page=True)
                if watch.console_errors or watch.foreign_requests():
                    log.error("console errors %s, foreign requests %s", watch.console_errors,
                              watch.foreign_requests())
                    return 1
        finally:
            server.shutdown()
            server.server_close()
            subprocess.run([sys.executable, str(REPO / "training_controller.py"), "--home", str(home), "stop",
                            "--wait", "--timeout", "60"], capture_output=True, timeout=90, env=env)
            daemon.wait(timeout=60)
    log.info("wrote %s (%d bytes)", args.out, args.out.stat().st_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
