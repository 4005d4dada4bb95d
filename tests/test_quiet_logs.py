"""Quiet, honest trainer logs: a fresh job's logs/training_output.log holds no warning that is not about the run.

    nice -n 5 .venv/bin/python -m pytest -q tests/test_quiet_logs.py

A real daemon trains a real tiny job; ``grep -i warn`` of its trainer log must find nothing (the run has nothing
to warn about). A ``sitecustomize`` on the trainer's PYTHONPATH records which modules the trainer process loaded,
so the test also sees that a run without QLoRA never imports bitsandbytes (whose import, on CPUs with
avx512_bf16, logs about a kernel hub it cannot reach offline). The filter of that message is checked on its own:
this CPU may not have avx512_bf16.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import chat_lines, write_config, write_jsonl
from trainingd.train.noise import BNB_CPU_LOGGER, BNB_KERNEL_HUB, quiet_third_party

REPO = Path(__file__).resolve().parent.parent

RECORDER = '''
import atexit, json, os, sys
def _record():
    with open(os.path.join(os.environ["TRAININGD_TEST_MODULES"], f"{os.getpid()}.json"), "w") as f:
        json.dump({"argv": sys.argv, "bitsandbytes": sys.modules.get("bitsandbytes") is not None}, f)
atexit.register(_record)
'''


@pytest.mark.slow
def test_a_fresh_trainer_log_speaks_only_of_the_run(home, tmp_path):
    write_config(home, use_qlora=False)
    write_jsonl(home / "inbox" / "chat.jsonl", chat_lines(6))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RECORDER)
    seen = tmp_path / "modules"
    seen.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)]), "TRAININGD_TEST_MODULES": str(seen),
           "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "trainingd", "daemon", "--home", str(home), "--once"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [p.name for p in (home / "queue" / "done").iterdir()], "the job did not reach done/"
    log = (home / "logs" / "training_output.log").read_text()
    assert "published the adapter" in log
    warnings = [line for line in log.splitlines() if "warn" in line.lower()]
    assert warnings == [], "\n".join(warnings)
    assert "\r" not in log, "progress bars redrawn with carriage returns"
    trainers = [json.loads(p.read_text()) for p in seen.iterdir()]
    trainers = [t for t in trainers if "trainingd.train" in " ".join(t["argv"]) or "--job-id" in t["argv"]]
    assert trainers, "the recorder saw no trainer process"
    assert not any(t["bitsandbytes"] for t in trainers), "a run without QLoRA imported bitsandbytes"


def test_bitsandbytes_kernel_hub_message_is_dropped_only_when_the_hub_is_offline(monkeypatch, caplog):
    quiet_third_party()
    quiet_third_party()  # twice: one filter
    logger = logging.getLogger(BNB_CPU_LOGGER)
    assert len(logger.filters) == 1
    message = BNB_KERNEL_HUB + ": %s. Please make sure you already `pip install kernels`"
    with caplog.at_level(logging.WARNING, logger=BNB_CPU_LOGGER):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        logger.warning(message, "offline mode")
        logger.warning("some other bitsandbytes warning")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        logger.warning(message, "connection refused")
    assert [r.getMessage()[:30] for r in caplog.records] == ["some other bitsandbytes warnin", BNB_KERNEL_HUB[:30]]


def test_only_the_named_deprecation_is_filtered():
    import warnings

    quiet_third_party()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()  # filters are installed again inside the context, as in a trainer process
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("`something_else` is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["`something_else` is deprecated"]
