"""The monitor in a hostile home: /api/logs never follows a link out of the home; clients that hang up early are
routine, not tracebacks.

Run: .venv/bin/python -m pytest tests/test_monitor_hostile.py -q
"""

from __future__ import annotations

import os
import socket
import struct
import time

import pytest

from test_monitor import Client, serve  # noqa: F401 - the fixture


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "outside" / "shadow"
    path.parent.mkdir()
    path.write_text("root:SECRET-HASH:19000:0:99999:7:::\n")
    return path


def test_api_logs_does_not_follow_a_symlinked_daemon_log(tmp_path, serve, secret):  # noqa: F811
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "daemon.log").symlink_to(secret)
    code, _, body = serve(home).get("/api/logs")
    assert code == 200 and b"SECRET" not in body
    assert b"not served" in body


def test_api_logs_does_not_follow_a_symlinked_logs_folder(tmp_path, serve, secret):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    (secret.parent / "daemon.log").write_text("SECRET line\n")
    (home / "logs").symlink_to(secret.parent)
    code, _, body = serve(home).get("/api/logs")
    assert code == 200 and b"SECRET" not in body


def test_api_logs_does_not_block_on_a_fifo_and_still_serves_a_real_log(tmp_path, serve):  # noqa: F811
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    os.mkfifo(home / "logs" / "daemon.log")
    client = serve(home)
    code, _, body = client.get("/api/logs")
    assert code == 200 and b"not a regular file" in body
    (home / "logs" / "daemon.log").unlink()
    (home / "logs" / "daemon.log").write_text("one\ntwo\n")
    assert client.get("/api/logs?tail=1")[2] == b"two\n"


def test_clients_closing_early_leave_no_traceback(tmp_path, serve, capfd):  # noqa: F811
    home = tmp_path / "home"
    (home / "logs").mkdir(parents=True)
    (home / "logs" / "daemon.log").write_text(("x" * 400 + "\n") * 5000)
    client = serve(home)
    capfd.readouterr()
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", client.port))
        s.sendall(b"GET /api/logs?tail=5000 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % client.port)
        s.recv(1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # hang up with a reset
        s.close()
    time.sleep(0.5)
    assert client.get("/healthz")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err, err[-2000:]


def test_steps_redone_after_a_crash_are_one_point_each(tmp_path):
    import json

    from trainingd.monitor.metrics_log import MetricsLog

    path = tmp_path / "metrics.jsonl"
    rows = [{"job_id": "000001-a", "step": s, "loss": 1.0 / s} for s in range(1, 21)]
    rows += [{"job_id": "000001-a", "step": s, "loss": 0.5 / s} for s in range(19, 40)]  # resumed at step 18
    rows.insert(10, {"job_id": "000001-a", "step": 10, "eval_loss": 0.3})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answer = MetricsLog(path).query()
    train = [p for p in answer["points"] if p["eval_loss"] is None]
    assert [p["step"] for p in train] == list(range(1, 40)), [p["step"] for p in train]
    assert [p["loss"] for p in train if p["step"] in (19, 20)] == [0.5 / 19, 0.5 / 20], "the redone rows win"
    assert len(answer["points"]) == 40  # and the evaluation
