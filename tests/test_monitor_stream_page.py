"""Both monitor pages in a real browser (Debian's /usr/bin/chromium, playwright) after a real stream of 10 jobs.

The stream is the product's own: 10 small files dropped into inbox/, the real daemon drains them through the real
trainer on the tiny model (``--once``), then the monitor serves that home. Chromium comes from apt (``.ci/run``
installs it); without it these tests fail, they are never skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from conftest import REPO, chat_lines, write_config, write_jsonl
from trainingd.monitor.browser import CHROMIUM, chart_points, text, wait_until, watch_page
from trainingd.monitor.server import serve_in_thread
from trainingd.paths import Home

pytestmark = pytest.mark.slow

JOBS = 10
LINES = 4  # two optimizer steps of two examples per file


@pytest.fixture(scope="module")
def stream(tmp_path_factory, tiny_model):
    """A home after a real stream of JOBS files, and a monitor serving it."""
    import shutil

    root = tmp_path_factory.mktemp("stream") / "home"
    (root / "models").mkdir(parents=True)
    shutil.copytree(tiny_model, root / "models" / "tiny-qwen3")
    # the gate judges every job against the champion on a small held-out file (the jobs table shows each decision)
    write_jsonl(root / "heldout.jsonl", chat_lines(8, seed=999))
    write_config(root, base_model=str(root / "models" / "tiny-qwen3"), max_length=128, batch_size=2,
                 gradient_accumulation=1, save_steps=100, learning_rate=1e-3, epochs=1, layer_stats_steps=1,
                 evaluation={"eval_file": "heldout.jsonl", "max_new_tokens": 4, "batch_size": 8},
                 gate={"enabled": True, "max_forgetting": None, "max_rejections_in_row": 0})
    for i in range(JOBS):
        write_jsonl(root / "inbox" / f"part{i:02d}.jsonl", chat_lines(LINES, seed=i))
    subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(root), "--once"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800, check=True)
    assert len(list((root / "queue" / "done").iterdir())) == JOBS
    server, _ = serve_in_thread(Home.at(root), "127.0.0.1", 0)
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def boundaries(page) -> int:
    return page.evaluate("__trainingd.state.boundaries.length")


def test_the_charts_draw_the_stream_on_the_examples_axis_and_the_window_changes_what_is_drawn(stream, tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    root, base = stream
    with sync_playwright() as pw, watch_page(pw, f"{base}/live_monitor_ui_v2.html") as watch:
        page = watch.page
        wait_until(lambda: chart_points(page, "loss") >= JOBS * 2, "a loss point for every step of the stream")
        assert page.input_value("#axis") == "examples" and page.input_value("#window") == "all"
        xs = page.evaluate("__trainingd.charts.loss.data[0]")
        assert xs == sorted(xs) and round(xs[-1]) == JOBS * LINES  # every example the adapter was trained on
        assert boundaries(page) == JOBS
        assert page.is_hidden("#empty-loss")
        assert "eval_fraction" in text(page, "empty-eval")  # the empty panel says how to fill it
        assert "after_each_job" in text(page, "empty-accuracy")

        page.select_option("#window", "jobs:5")
        wait_until(lambda: boundaries(page) == 5, "the last five files")
        assert chart_points(page, "loss") == 5 * 2
        assert page.evaluate("__trainingd.charts.loss.data[0][0]") > (JOBS - 5) * LINES - 1
        page.select_option("#window", "job")
        wait_until(lambda: boundaries(page) == 1, "the last file alone")
        page.select_option("#window", "all")
        wait_until(lambda: boundaries(page) == JOBS, "the whole life again")

        page.select_option("#axis", "steps")
        wait_until(lambda: round(page.evaluate("__trainingd.charts.loss.data[0].slice(-1)[0] || 0")) == JOBS * 2,
                   "the steps axis")
        page.evaluate("__trainingd.setZoom([10.5, 20.5])")
        wait_until(lambda: chart_points(page, "loss") == 10, "the zoomed range")
        assert page.is_visible("#btn-unzoom")
        page.click("#btn-unzoom")
        wait_until(lambda: chart_points(page, "loss") == JOBS * 2, "the zoom reset")
        page.select_option("#axis", "examples")

        # the jobs table: one row per job, newest first, each with its gate decision
        wait_until(lambda: page.locator("#jobs-body tr").count() == JOBS, "a row per job")
        files = page.eval_on_selector_all("#jobs-body tr td.job-file", "tds => tds.map(t => t.textContent)")
        assert files == [f"part{i:02d}.jsonl" for i in reversed(range(JOBS))]
        gates = page.eval_on_selector_all("#jobs-body tr td.gate", "tds => tds.map(t => t.textContent)")
        assert len(gates) == JOBS and all(g.startswith(("promoted", "rejected")) for g in gates), gates
        assert text(page, "jobs-range") == f"1–{JOBS} of {JOBS}"
        link = page.get_attribute("#jobs-body tr:first-child a", "href")
        with urllib.request.urlopen(base + link, timeout=10) as r:
            lineage = json.load(r)
        assert lineage["job_id"].endswith(f"part{JOBS - 1:02d}") and lineage["snapshot"] is not None
        assert lineage["in_live_adapter"] == gates[0].startswith("promoted")

        page.screenshot(path=str(tmp_path / "stream.png"), full_page=True)
        assert watch.console_errors == []
        assert watch.requests and watch.foreign_requests() == []


def test_the_layer_page_charts_modules_over_several_jobs(stream, tmp_path):
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    from playwright.sync_api import sync_playwright

    root, base = stream
    with sync_playwright() as pw, watch_page(pw, f"{base}/layer_activity_monitor.html") as watch:
        page = watch.page
        wait_until(lambda: page.evaluate("__layers.charts.life ? __layers.charts.life.data[0].length : 0") >= JOBS,
                   "a report from every job on the life chart")
        xs = page.evaluate("__layers.charts.life.data[0]")
        assert xs == sorted(xs) and round(xs[-1]) == JOBS * 2  # optimizer steps over the adapter's life
        series = page.evaluate("__layers.charts.life.data.slice(1)")
        assert series and all(len(s) == len(xs) for s in series)
        jobs = page.evaluate("__layers.state.perJob.jobs")
        assert len(jobs) == JOBS
        assert page.evaluate("document.getElementById('job-heatmap').width") >= JOBS
        assert page.locator("#ranked li").count() >= 1
        assert page.is_hidden("#empty-history")
        page.screenshot(path=str(tmp_path / "layers.png"), full_page=True)
        assert watch.console_errors == []
        assert watch.foreign_requests() == []
