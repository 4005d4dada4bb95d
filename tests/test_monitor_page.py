"""The monitor page in a real browser (Debian's /usr/bin/chromium driven by playwright) against a live daemon.

Chromium comes from apt (``.ci/run`` installs it); without it this test fails, it is never skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from conftest import REPO, chat_lines, write_config, write_jsonl
from trainingd.atomic_ops import atomic_write_json
from trainingd.config import AutoGenerateConfig
from trainingd.daemon.autogen import curriculum_level
from trainingd.daemon.outcome import SKIP_REASON
from trainingd.contracts.status import compose_status
from trainingd.monitor.browser import CHROMIUM, chart_points, text, wait_until, watch_page
from trainingd.monitor.server import serve_in_thread
from trainingd.paths import Home

pytestmark = pytest.mark.slow


def _int(value: str) -> int | None:
    return int(value) if value.strip().isdigit() else None


def test_the_page_draws_a_live_training_and_pauses_it(home, tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    # Enough work for the tiny model to train for a while: the test watches steps advance, then pauses.
    write_config(home, epochs=4, eval_fraction=0.1, eval_steps=20, save_steps=50)
    write_jsonl(home / "inbox" / "chat.jsonl", chat_lines(600))
    (home / "inbox" / "broken.jsonl").write_text("{not json\n")
    daemon = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server, _ = serve_in_thread(Home.at(home), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/live_monitor_ui_v2.html"
    try:
        with sync_playwright() as pw, watch_page(pw, url) as watch:
            page = watch.page
            token = Home.at(home).monitor_token.read_text().strip()
            assert page.get_attribute('meta[name="trainingd-token"]', "content") == token

            wait_until(lambda: chart_points(page, "loss") > 0, "the loss chart to draw points")
            first = wait_until(lambda: _int(text(page, "step")), "a step number")
            wait_until(lambda: (_int(text(page, "step")) or 0) > first, "the step to advance")
            assert text(page, "current-file") == "chat.jsonl"
            assert page.get_attribute("#badge", "data-status") in ("training", "evaluating", "saving")
            assert float(page.evaluate("getComputedStyle(document.getElementById('progress-bar')).width")
                         .removesuffix("px")) > 0
            wait_until(lambda: text(page, "q-failed") == "1", "the failed file in the queue")
            assert "broken.jsonl" in text(page, "queue-failed")
            wait_until(lambda: chart_points(page, "system") >= 2, "a system history")
            # the smoothed series is the debiased EMA of the raw one (TensorBoard's formula)
            raw, smooth, s = page.evaluate("[__trainingd.charts.loss.data[1], __trainingd.charts.loss.data[2],"
                                           " __trainingd.state.smoothing]")
            assert len(raw) == len(smooth) and any(x is not None for x in raw)
            ema, t = 0.0, 0
            for x, y in zip(raw, smooth):
                if x is None:
                    assert y is None
                    continue
                t += 1
                ema = s * ema + (1 - s) * x
                assert y == pytest.approx(ema / (1 - s ** t), rel=1e-9)
            loss_points = chart_points(page, "loss")

            page.click("#btn-pause")
            wait_until(lambda: page.get_attribute("#badge", "data-status") == "paused", "the badge to say paused")
            assert text(page, "badge") == "paused"
            assert chart_points(page, "loss") >= loss_points

            page.screenshot(path=str(tmp_path / "monitor.png"), full_page=True)
            assert (tmp_path / "monitor.png").stat().st_size > 10_000
            assert watch.console_errors == []
            assert watch.requests and watch.foreign_requests() == []
            port = server.server_address[1]
            assert any(u.endswith("/vendor/uplot/uPlot.iife.min.js") for u in watch.requests)
            assert any(f":{port}/api/metrics?axis=examples&window=all" in u for u in watch.requests)
    finally:
        stop_all(server, home, daemon)


def stop_all(server, home, daemon: subprocess.Popen) -> None:
    """Close the monitor, then stop the daemon the way a user does and wait for it."""
    server.shutdown()
    server.server_close()
    subprocess.run([sys.executable, str(REPO / "training_controller.py"), "--home", str(home), "stop", "--wait",
                    "--timeout", "60"], capture_output=True, timeout=90)
    daemon.wait(timeout=60)


def _failed_jobs(base: str) -> list[dict]:
    with urllib.request.urlopen(f"{base}/api/queue?state=failed", timeout=10) as r:
        return json.load(r)["states"]["failed"]["jobs"]


def test_the_layer_page_draws_the_heatmap_and_top_changers_then_skip_fails_the_job(home, tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    # a report every optimizer step, and enough steps to see several reports before the skip
    write_config(home, epochs=4, layer_stats_steps=1, eval_steps=0, save_steps=1000)
    write_jsonl(home / "inbox" / "chat.jsonl", chat_lines(600))
    daemon = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server, _ = serve_in_thread(Home.at(home), "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with sync_playwright() as pw, watch_page(pw, f"{base}/layer_activity_monitor.html") as watch:
            page = watch.page
            # the tiny model: 2 decoder layers x 7 target modules, every cell coloured by delta_norm
            wait_until(lambda: page.locator("#heatmap .cell.filled").count() == 14, "14 filled heatmap cells")
            assert page.is_hidden("#empty")
            heads = page.locator("#heatmap .head").all_text_contents()
            assert set(heads) == {"layer", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                  "down_proj"}
            assert page.locator("#heatmap .rowhead").all_text_contents() == ["0", "1"]
            colours = page.eval_on_selector_all("#heatmap .cell.filled", "cs => cs.map(c => c.style.backgroundColor)")
            assert len(set(colours)) > 1  # a scale, not one flat colour
            wait_until(lambda: page.evaluate("__layers.charts.life ? __layers.charts.life.data[0].length : 0") >= 2,
                       "two reports on the life chart")
            data = page.evaluate("__layers.charts.life.data")
            assert 1 <= len(data) - 1 <= 8 and data[0] == sorted(data[0])
            assert any(isinstance(v, float) and v > 0 for series in data[1:] for v in series)
            assert page.locator("#top li").count() >= 1
            page.select_option("#metric", "grad_norm")
            assert page.locator("#heatmap .cell.filled").count() == 14
            page.screenshot(path=str(tmp_path / "layers.png"), full_page=True)
            assert (tmp_path / "layers.png").stat().st_size > 10_000

            # the link to the main page, where Skip asks for a confirmation first
            page.click("#link-main")
            page.wait_for_url(f"{base}/live_monitor_ui_v2.html")
            page.on("dialog", lambda d: d.accept())
            wait_until(lambda: page.is_enabled("#btn-skip"), "skip to be enabled while the job trains")
            page.click("#btn-skip")
            jobs = wait_until(lambda: _failed_jobs(base), "the skipped job in failed/")
            assert jobs[0]["file"] == "chat.jsonl" and SKIP_REASON in jobs[0]["reason"]
            wait_until(lambda: SKIP_REASON in text(page, "queue-failed"), "the page to list the skip reason")
            assert list((home / "queue" / "failed").glob("*chat*")), "no job file in queue/failed/"
            assert watch.console_errors == []
            assert watch.requests and watch.foreign_requests() == []
            assert any(u.endswith("/js/layers.js") for u in watch.requests)
    finally:
        stop_all(server, home, daemon)


def test_the_page_warns_when_no_daemon_runs_and_when_the_status_is_stale(tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    home = Home.at(tmp_path / "h")
    server, _ = serve_in_thread(home, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as pw, watch_page(pw, url) as watch:
            page = watch.page
            # an empty home: no status file, no daemon
            wait_until(lambda: page.is_visible("#stale"), "the no-daemon warning")
            assert "No daemon is running" in text(page, "stale")
            assert text(page, "badge") == "no status"
            assert page.is_disabled("#btn-pause") and page.is_disabled("#btn-skip")
            # a status that says training while no daemon holds the lock: the daemon died
            doc = compose_status(daemon={"pid": 1, "version": "0", "started_at": None, "home": str(home.root)},
                                 status="training", job={"id": "000001-chat", "file": "chat.jsonl"},
                                 progress={"step": 7, "total_steps": 20})
            doc["updated_at"] = "2020-01-01T00:00:00Z"
            home.status.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(home.status, doc)
            wait_until(lambda: "Stale status" in text(page, "stale"), "the stale warning")
            assert "no daemon is running" in text(page, "stale")
            assert text(page, "badge") == "training (daemon not running)"
            assert text(page, "step") == "7" and text(page, "total-steps") == "20"
            assert not page.is_visible("#level")  # no auto-generate block: no level line
            # auto-generate on, the curriculum past level 1: the accuracy chart says which level and why
            cfg = AutoGenerateConfig(enabled=True)
            evals = [{"kind": "eval", "level": 1, "exact_match": 0.85, "job_id": f"00000{i}-x"} for i in (1, 2)]
            cur = curriculum_level(cfg, evals)
            doc["auto_generate"] = {"enabled": True, "level": cur["level"], "level_reason": cur["reason"],
                                    "curriculum": {"enabled": True, "max_level": cfg.curriculum.max_level}}
            atomic_write_json(home.status, doc)
            wait_until(lambda: page.is_visible("#level"), "the level line")
            assert text(page, "level").startswith("generated data: level 2 of 5 — level 2: promoted from 1")
            page.screenshot(path=str(tmp_path / "stale.png"))
            # the layer page of a home without a report says so instead of drawing an empty grid
            page.click("#link-layers")
            wait_until(lambda: page.is_visible("#empty"), "the no-report message")
            assert "no layer activity report" in text(page, "empty")
            assert text(page, "report") == "no report" and page.locator("#heatmap .cell").count() == 0
            assert watch.console_errors == [] and watch.foreign_requests() == []
    finally:
        server.shutdown()
        server.server_close()
