"""The package as a user installs it: build the wheel, install it into a fresh virtual environment outside the
checkout, and run the quick start with the installed ``trainingd`` command only.

    nice -n 5 .venv/bin/python -m pytest -q tests/test_wheel_install.py

Offline: ``pip wheel --no-deps --no-build-isolation`` builds from a copy of the sources (the checkout gets no
build/ folder), ``pip install --no-deps --no-index`` installs the wheel, and the new environment sees this test
environment's libraries (torch, transformers, ...) through a ``.pth`` file, after its own site-packages, so the
installed ``trainingd`` is the one that runs. Every command runs from a temporary home with no PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import chat_lines, wait_for, write_config, write_jsonl

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRAININGD_HOME", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; returns its bin/ folder."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "trainingd", src / "trainingd", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(src)], check=True, timeout=300, env=_clean_env(), cwd=work)
    (wheel,) = dist.glob("trainingd-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    # the test environment's libraries, after the new venv's own site-packages
    (purelib / "test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, timeout=300, env=_clean_env(), cwd=work)
    return venv / "bin"


def run(bin_dir: Path, home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "trainingd"), *args], capture_output=True, text=True, timeout=timeout,
                          env=_clean_env(), cwd=home)


def test_the_installed_package_is_not_the_checkout(installed, tmp_path):
    r = subprocess.run([str(installed / "python"), "-c", "import trainingd, trainingd.monitor.server as s; "
                        "print(trainingd.__file__); print(s.STATIC)"], capture_output=True, text=True,
                       env=_clean_env(), cwd=tmp_path, check=True)
    package, static = r.stdout.split()
    assert Path(package).is_relative_to(installed.parent) and not Path(package).is_relative_to(REPO)
    assert (Path(static) / "vendor" / "uplot" / "uPlot.iife.min.js").is_file()


def test_quick_start_with_the_installed_command(installed, tmp_path, tiny_model):
    home = tmp_path / "home"
    home.mkdir()
    r = run(installed, home, "init")
    assert r.returncode == 0, r.stderr
    assert (home / "config.json").is_file() and (home / "inbox").is_dir()
    shutil.copytree(tiny_model, home / "models" / "tiny-qwen3-test")
    write_config(home, base_model="models/tiny-qwen3-test", max_length=128, batch_size=2, gradient_accumulation=1,
                 save_steps=2, rescan_interval_s=0.5)
    r = run(installed, home, "start")
    assert r.returncode == 0, r.stderr
    pid = int((home / ".daemon.pid").read_text())
    try:
        again = run(installed, home, "start")
        assert again.returncode == 1 and "already running" in again.stderr
        write_jsonl(home / "inbox" / ".chat.jsonl.tmp", chat_lines(6))
        os.replace(home / "inbox" / ".chat.jsonl.tmp", home / "inbox" / "chat.jsonl")
        wait_for(lambda: any((home / "queue" / "done").glob("*-chat")), "the file to reach done/", limit_s=600)
        r = run(installed, home, "status")
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
        r = run(installed, home, "--json", "status")
        assert json.loads(r.stdout)["daemon_running"] is True
        r = run(installed, home, "logs", "-n", "50")
        assert r.returncode == 0 and "daemon starting" in r.stdout
        _monitor_serves_the_installed_files(installed, home)
        r = run(installed, home, "stop", "--wait", timeout=300)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not (home / ".daemon.pid").exists(), "the daemon to exit")
    finally:
        if (home / ".daemon.pid").exists():
            os.kill(pid, signal.SIGTERM)


def _monitor_serves_the_installed_files(installed: Path, home: Path) -> None:
    static = Path(subprocess.run([str(installed / "python"), "-c", "import trainingd.monitor.server as s; "
                                  "print(s.STATIC)"], capture_output=True, text=True, env=_clean_env(), cwd=home,
                                 check=True).stdout.strip())
    # mark the installed copy: only a monitor that serves the installed files can show the mark
    js = static / "js" / "monitor.js"
    js.write_bytes(js.read_bytes() + b"\n// installed copy\n")
    monitor = subprocess.Popen([str(installed / "trainingd"), "monitor", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=_clean_env(), cwd=home)
    try:
        line = monitor.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", line)
        assert url, line
        base = url.group(0)
        page = urllib.request.urlopen(base + "/", timeout=30).read()
        assert b"<html" in page.lower()
        assert urllib.request.urlopen(base + "/js/monitor.js", timeout=30).read() == js.read_bytes()
        uplot = urllib.request.urlopen(base + "/vendor/uplot/uPlot.iife.min.js", timeout=30).read()
        assert uplot == (static / "vendor" / "uplot" / "uPlot.iife.min.js").read_bytes()
        status = json.loads(urllib.request.urlopen(base + "/api/status", timeout=30).read())
        assert status["daemon_running"] is True
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=30)
