"""A process group over two "machines" on this CPU: the daemon's machine 0 and ``trainingd node --machine-rank 1``
(torchrun with two nodes, gloo, both on 127.0.0.1; the home is what a shared file system would give both).

    .venv/bin/python -m pytest tests/test_multinode.py -x -q

* a job waits for the other machine, and the status says so and how to start it; the node, started late, joins it
  and every later job (two in a row), and the adapter equals the one machine, two-process adapter of the files;
* the node's processes write nothing but their log; SIGTERM stops the node, exit 0;
* with the other machine down, each try times out (``join_timeout_s``) and the job goes back with no attempt
  counted, until the node starts and the job is trained.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from conftest import REPO, chat_lines, write_config, write_jsonl
from test_distributed import TWO, adapter, max_diff
from test_steering import Daemon, status, wait_for
from trainingd.jobqueue import JobQueue
from trainingd.paths import Home

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_all(home, files, before_wait=lambda d: None) -> list:
    q = JobQueue(Home(home))
    q.ensure_dirs()
    jobs = [q.add(f) for f in files]
    d = Daemon(home, "--once")
    try:
        before_wait(d)
        assert d.wait() == 0, d.tail()
    finally:
        d.close()
    done = [q.get(j.id) for j in jobs]
    assert [j.state for j in done] == ["done", "done"], d.tail()
    return done


def test_a_second_machine_joins_every_job_and_trains_the_one_machine_adapter(two_homes, tmp_path):
    one, multi = two_homes
    files = [write_jsonl(tmp_path / f"data{i}.jsonl", chat_lines(16, seed=10 + i)) for i in range(2)]
    write_config(one, batch_size=2, distributed=TWO)
    write_config(multi, batch_size=2, distributed={**TWO, "num_machines": 2, "main_process_ip": "127.0.0.1",
                                                    "main_process_port": free_port()})
    train_all(one, files)

    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = open(tmp_path / "node.out", "wb")
    started: list[subprocess.Popen] = []

    def start_node_once_the_daemon_waits_for_it(daemon) -> None:
        # The daemon starts first: its status says that the group waits for the other machine and how to start it.
        wait_for(lambda: "machines to join" in str((status(multi) or {}).get("status_detail")),
                 "the status to say that the job waits for machine 1", daemon)
        assert "trainingd node" in status(multi)["status_detail"]
        started.append(subprocess.Popen([sys.executable, "-m", "trainingd", "node", "--home", str(multi),
                                         "--machine-rank", "1"], cwd=REPO, env=env, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True))

    try:
        done = train_all(multi, files, start_node_once_the_daemon_waits_for_it)
        node = started[0]
        assert all(j.meta["result"]["num_processes"] == 2 for j in done)
        assert max_diff(adapter(one), adapter(multi)) <= 1e-6
        node_log = Home(multi).node_training_log(1)
        wait_for(lambda: (tmp_path / "node.out").read_text().count("exited (0)") == 2,
                 "the node's processes of both jobs to exit")
        said = (tmp_path / "node.out").read_text()
        assert all(f"joined job {j.id}" in said for j in done), said
        assert node_log.read_text().count("===== machine 1: job") == 2
        assert node.poll() is None  # it waits for the next job
    finally:
        for node in started:
            node.send_signal(signal.SIGTERM)
        codes = [node.wait(timeout=60) for node in started]
        out.close()
    assert codes == [0], (tmp_path / "node.out").read_text()


def test_a_machine_that_is_down_holds_the_job_without_counting_attempts(home, tmp_path):
    write_config(home, batch_size=2, layer_stats_steps=0, max_attempts=1,
                 distributed={**TWO, "num_machines": 2, "main_process_ip": "127.0.0.1",
                              "main_process_port": free_port(), "join_timeout_s": 2})
    q = JobQueue(Home(home))
    q.ensure_dirs()
    job = q.add(write_jsonl(tmp_path / "data.jsonl", chat_lines(8, seed=1)))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    d = Daemon(home, "--once")
    node = None
    try:
        # No node: each try times out waiting for machine 1 and the job goes back, however many tries it takes
        # (max_attempts is 1: one counted crash would fail it).
        wait_for(lambda: Home(home).daemon_log.is_file()
                 and Home(home).daemon_log.read_text().count("not every machine joined") >= 2,
                 "two tries to time out waiting for machine 1", d)
        assert q.get(job.id).state in ("pending", "processing")
        assert int(q.get(job.id).meta.get("attempts") or 0) == 0
        node = subprocess.Popen([sys.executable, "-m", "trainingd", "node", "--home", str(home), "--machine-rank",
                                 "1"], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True)
        assert d.wait() == 0, d.tail()
    finally:
        d.close()
        if node is not None:
            node.send_signal(signal.SIGTERM)
            node.wait(timeout=60)
    assert q.get(job.id).state == "done", d.tail()
