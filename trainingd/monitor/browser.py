"""Drive the monitor page in Debian's Chromium with ``playwright`` (tests and ``docs/make_screenshot.py``).

    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw, watch_page(pw, "http://127.0.0.1:8080/") as watch:
        wait_for_chart_points(watch.page)

No browser is downloaded (never ``playwright install``): it launches ``/usr/bin/chromium``
(``apt-get install -y chromium``) with the flags that keep it from calling home. Every request the page makes
and every console error is recorded, so a caller can check that the page stays on this machine and is clean.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


@dataclass
class PageWatch:
    """The open page and what it did: request URLs, console errors and uncaught exceptions."""

    page: Any
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def foreign_requests(self) -> list[str]:
        """Requests that left this machine (a ``data:`` URL is no request on the network)."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme == "data":
                continue
            if parts.scheme not in ("http", "https") or parts.hostname not in LOCAL_HOSTS:
                out.append(url)
        return out


@contextlib.contextmanager
def watch_page(playwright: Any, url: str, width: int = 1400, height: int = 1100) -> Iterator[PageWatch]:
    """Open ``url`` in a fresh headless Chromium and record what the page does until the block ends."""
    if not CHROMIUM.exists():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
    try:
        page = browser.new_page(viewport={"width": width, "height": height})
        watch = PageWatch(page)
        page.on("request", lambda r: watch.requests.append(r.url))
        page.on("console", lambda m: watch.console_errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: watch.console_errors.append(f"pageerror: {e}"))
        page.goto(url, wait_until="load")
        yield watch
    finally:
        browser.close()


def chart_points(page: Any, chart: str = "loss") -> int:
    """How many x values the page's uPlot chart ``chart`` holds (``window.__trainingd.charts``)."""
    return page.evaluate(
        "(name) => { const t = window.__trainingd; const c = t && t.charts[name]; return c ? c.data[0].length : 0; }",
        chart)


def text(page: Any, element_id: str) -> str:
    return page.evaluate("(id) => document.getElementById(id).textContent", element_id)


def wait_until(predicate: Any, what: str, limit_s: float = 120.0, every_s: float = 0.25) -> Any:
    """Poll ``predicate`` until truthy; the limit only keeps a broken build from hanging."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"gave up waiting for {what}")
