"""The monitor over a stream of many jobs: life axes, windows, the jobs table and the layer history, over real HTTP.

    ./run_tests.sh tests/test_monitor_stream.py -q
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from trainingd.atomic_ops import append_jsonl
from trainingd.contracts.layer_history import LIMIT, LayerHistory, read_layer_history
from trainingd.contracts.layer_activity import make_doc
from trainingd.monitor.metrics_log import IDLE_GAP_S
from trainingd.monitor.server import serve_in_thread
from trainingd.paths import Home

T0 = 1_700_000_000.0


@pytest.fixture
def served(tmp_path):
    home = Home.at(tmp_path / "h")
    home.status_dir.mkdir(parents=True)
    server, _ = serve_in_thread(home, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str) -> dict:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return json.load(r)

    try:
        yield home, get, base
    finally:
        server.shutdown()
        server.server_close()


def write_stream(home: Home, jobs: int = 3, steps: int = 4, gap_s: float = 3600.0) -> None:
    """``jobs`` jobs of ``steps`` steps (8 examples, 100 tokens a step), an eval record each, an idle gap between."""
    t = T0
    for j in range(jobs):
        for s in range(1, steps + 1):
            t += 1.0
            append_jsonl(home.metrics, {"t": t, "job_id": f"{j:06d}-f{j}", "step": s, "loss": 2.0 / s,
                                        "learning_rate": 1e-4, "tokens_per_s": 50.0, "tokens_seen": 100 * s,
                                        "examples_done": 8 * s})
        append_jsonl(home.metrics, {"t": t, "job_id": f"{j:06d}-f{j}", "step": steps, "eval_loss": 1.0})
        t += gap_s


def test_the_examples_axis_continues_across_jobs_and_marks_each_file(served):
    home, get, _ = served
    write_stream(home)
    doc = get("/api/metrics?axis=examples&window=all")
    train = [p["x"] for p in doc["points"] if p["eval_loss"] is None]
    assert train == [8.0 * k for k in range(1, 13)]  # each job's examples start where the last one's ended
    assert [b["job_id"] for b in doc["boundaries"]] == ["000000-f0", "000001-f1", "000002-f2"]
    assert [b["x"] for b in doc["boundaries"]] == [0.0, 32.0, 64.0]
    assert sum(p["eval_loss"] is not None for p in doc["points"]) == 3
    tokens = get("/api/metrics?axis=tokens")
    assert max(p["x"] for p in tokens["points"]) == 1200.0
    steps = get("/api/metrics?axis=steps")
    assert max(p["x"] for p in steps["points"]) == 12.0


def test_the_time_axis_compresses_idle_gaps(served):
    home, get, _ = served
    write_stream(home, gap_s=3600.0)
    xs = [p["x"] for p in get("/api/metrics?axis=time")["points"]]
    # three jobs of 4 steps a second apart (3 s each) and two idle hours that count IDLE_GAP_S each
    assert max(xs) == pytest.approx(3 * 3 + 2 * IDLE_GAP_S)
    assert xs == sorted(xs)


def test_the_window_selects_the_last_jobs_and_the_zoom_narrows_the_range(served):
    home, get, _ = served
    write_stream(home, jobs=5)
    assert get("/api/metrics?axis=examples&window=job")["jobs"] == 1
    last2 = get("/api/metrics?axis=examples&window=jobs:2")
    assert [b["job_id"] for b in last2["boundaries"]] == ["000003-f3", "000004-f4"]
    assert min(p["x"] for p in last2["points"]) == 8.0 * 13
    assert get("/api/metrics?axis=examples&window=jobs:50")["jobs"] == 5
    zoom = get("/api/metrics?axis=examples&x_min=40&x_max=64")
    assert {p["x"] for p in zoom["points"]} == {40.0, 48.0, 56.0, 64.0}
    day = get("/api/metrics?axis=examples&window=24h")  # the stream is years old
    assert day["points"] == [] and day["matched"] == 0


def test_the_server_downsamples_a_long_life_and_keeps_every_eval(served):
    home, get, _ = served
    write_stream(home, jobs=40, steps=100, gap_s=5.0)
    doc = get("/api/metrics?axis=examples&max_points=300")
    assert doc["matched"] == 40 * 101 and doc["downsampled"]
    evals = [p for p in doc["points"] if p["eval_loss"] is not None]
    assert len(evals) == 40 and len(doc["points"]) <= 300 + 40
    xs = [p["x"] for p in doc["points"]]
    assert xs == sorted(xs) and xs[-1] == 40 * 800.0


@pytest.mark.parametrize("query", ["axis=wall", "window=jobs:0", "window=week", "axis=examples&x_min=abc"])
def test_a_bad_life_query_is_a_400_that_says_why(served, query):
    home, get, base = served
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base}/api/metrics?{query}", timeout=10)
    assert e.value.code == 400
    assert json.load(e.value)["error"]


def history_line(home: Home, **entry) -> None:
    append_jsonl(home.history, entry)


def test_the_jobs_table_is_newest_first_with_scores_before_and_after_and_the_gate(served):
    home, get, _ = served
    history_line(home, kind="eval", job_id=None, exact_match=0.0, correct=0, total=50, trained_examples=0)
    history_line(home, job_id="000001-a", file="a.jsonl", state="done", result="ok", steps=12, loss=0.5,
                 tokens=1000, seconds=10.0, examples=96, kept=90, dropped_too_long=6)
    history_line(home, kind="eval", job_id="000001-a", exact_match=0.5, correct=25, total=50, trained_examples=90)
    history_line(home, job_id="000002-b", file="b.jsonl", state="done", result="ok", steps=12, loss=0.4,
                 tokens=1000, seconds=20.0, gate={"decision": "rejected", "reason": "worse than the champion",
                                                   "champion": {"exact_match": 0.5, "correct": 25, "total": 50},
                                                   "candidate": {"exact_match": 0.3, "correct": 15, "total": 50}})
    history_line(home, job_id="000003-c", file="c.jsonl", state="failed", result="data_error", reason="line 3: bad")
    doc = get("/api/jobs?limit=2")
    assert doc["total"] == 3 and [j["job_id"] for j in doc["jobs"]] == ["000003-c", "000002-b"]
    c, b = doc["jobs"]
    assert c["state"] == "failed" and c["reason"] == "line 3: bad" and c["gate"] is None
    assert b["gate"]["decision"] == "rejected" and b["gate"]["reason"] == "worse than the champion"
    assert b["score_before"]["exact_match"] == 0.5 and b["score_after"]["exact_match"] == 0.3
    assert b["tokens_per_s"] == 50.0
    (a,) = get("/api/jobs?offset=2&limit=2")["jobs"]
    assert a["score_before"]["exact_match"] == 0.0 and a["score_after"]["exact_match"] == 0.5
    assert a["kept"] == 90 and a["dropped_too_long"] == 6 and a["tokens_per_s"] == 100.0


def test_the_lineage_link_of_a_job_answers_and_an_unknown_job_is_404(served):
    home, get, base = served
    history_line(home, job_id="000001-a", file="a.jsonl", state="done", result="ok", steps=3)
    doc = get("/api/lineage?job_id=000001-a")
    assert doc["history"]["file"] == "a.jsonl" and doc["in_live_adapter"] is False
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{base}/api/lineage?job_id=nope", timeout=10)
    assert e.value.code == 404


def module_rows(scale: float) -> list[dict]:
    return [{"name": f"model.layers.{i}.self_attn.q_proj", "layer": i, "module": "q_proj",
             "update_norm": scale * (i + 1), "delta_norm": 0.1, "grad_norm": 1.0} for i in range(3)]


def test_the_layer_history_stays_bounded_and_keeps_the_newest_reports(tmp_path):
    path = tmp_path / "layer_history.jsonl"
    hist = LayerHistory(path, limit=40)
    for k in range(130):
        hist.append(make_doc(module_rows(k), job_id=f"job{k // 10}", step=k % 10 + 1, previous_step=k % 10))
        assert len(read_layer_history(path)) <= 50
    kept = read_layer_history(path)
    assert kept[-1]["job_id"] == "job12" and kept[-1]["modules"]["model.layers.2.self_attn.q_proj"][0] == 129 * 3
    # a new process appending to the same file counts what is there first
    LayerHistory(path, limit=40).append(make_doc(module_rows(1), job_id="job13", step=1, previous_step=0))
    assert len(read_layer_history(path)) <= 50
    assert LIMIT >= 1000


def test_api_layers_serves_the_life_and_the_change_of_each_job(served):
    home, get, _ = served
    hist = LayerHistory(home.layer_history)
    for job in range(4):
        for step in (1, 2):
            hist.append(make_doc(module_rows(job * 2 + step), job_id=f"00000{job}-f", step=step, previous_step=0))
    h = get("/api/layers")["history"]
    assert h["reports"] == 8
    assert h["life"]["x"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    top = "model.layers.2.self_attn.q_proj"
    assert list(h["life"]["series"])[0] == top and h["life"]["series"][top][-1] == 8 * 3
    assert h["per_job"]["jobs"] == ["000000-f", "000001-f", "000002-f", "000003-f"]
    col = h["per_job"]["modules"].index(top)
    # the first job moved the module from 0 to 2*3, each later one by 2*3 more
    assert [c[col] for c in h["per_job"]["change"]] == [6.0, 6.0, 6.0, 6.0]
    assert h["ranked"][0] == {"name": top, "total_change": 24.0}


def test_an_empty_home_answers_every_stream_view_with_nothing(served):
    home, get, _ = served
    assert get("/api/metrics?axis=examples")["points"] == []
    assert get("/api/jobs")["jobs"] == []
    assert get("/api/layers")["history"]["reports"] == 0
