"""Running the trainer package's tools as their own processes, so that the caller never imports torch.

The daemon, the command lines and the lifecycle reach what needs torch (evaluation, merging an adapter, building an
embedded base) only through ``python -m trainingd.train.<module>``; ``tests/test_layout.py`` holds that rule.

    python -m trainingd.train.evaluate --home H --trigger cli [--json]
    python -m trainingd.train.merge BASE ADAPTER OUT [--report FILE]
    python -m trainingd.train.build_base NAME --models DIR
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding ``trainingd/`` (a checkout or site-packages)."""


def package_env() -> dict[str, str]:
    """This environment with the package importable whatever the child's working folder (a home)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    return env


def trainer_tool(module: str, *args: str) -> list[str]:
    """The command line of ``python -m trainingd.train.<module> ARGS`` with this interpreter."""
    return [sys.executable, "-m", f"trainingd.train.{module}", *args]


def run_trainer_tool(module: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """Run one trainer tool to its end; ``kwargs`` go to ``subprocess.run`` (output, timeout, ...)."""
    return subprocess.run(trainer_tool(module, *args), env=package_env(), stdin=subprocess.DEVNULL, **kwargs)
