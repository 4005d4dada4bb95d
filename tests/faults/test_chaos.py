"""A short chaos run in CI: random SIGKILLs of the daemon and the trainer, then nothing lost or duplicated.

    ./run_tests.sh tests/faults/test_chaos.py -q        (the long run: python3 bench/chaos.py --kills 200)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fault_helpers import REPO

pytestmark = pytest.mark.faults


def test_random_kills_of_daemon_and_trainer_lose_and_duplicate_nothing(tmp_path):
    res = subprocess.run([sys.executable, str(REPO / "bench" / "chaos.py"), "--kills", "12", "--jobs", "6",
                          "--seed", "3", "--work", str(tmp_path), "--json"], capture_output=True, text=True,
                         cwd=REPO, timeout=900)
    report = json.loads(res.stdout)
    assert report["kills"] == 12 and report["jobs"] == 6
    assert report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["invariant_problems"] == [], report
    assert report["adapter_equals_uninterrupted"], report
    assert report["done"] + report["failed"] == 6 and res.returncode == 0
