"""Held-out evaluation: greedy exact match and token accuracy on the tiny model, recorded for status and monitor.

Run: .venv/bin/python -m pytest tests/test_evaluate.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_config
from trainingd.contracts.eval_result import eval_entries, read_last
from trainingd.train.evaluate import run_eval_command
from trainingd.generator.puzzles import make_eval_puzzle
from trainingd.monitor import views
from trainingd.monitor.history_index import HistoryIndex
from trainingd.paths import Home

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from trainingd.train.evaluate import load_for_eval
    from trainingd.train.model import load_tokenizer

    return load_for_eval(tiny_model, None), load_tokenizer(tiny_model)


def test_exact_match_and_token_accuracy_are_1_for_the_models_own_greedy_answers(tiny):
    from trainingd.train.evaluate import evaluate_model

    model, tok = tiny
    prompts = [make_eval_puzzle(0, i).record()["messages"][:1] for i in range(6)]
    # First learn what the model answers, then ask it to match exactly that: a right answer must score 1.
    probe = evaluate_model(model, tok, [{"messages": p + [{"role": "assistant", "content": "x"}]} for p in prompts],
                           batch_size=4, max_new_tokens=6)
    assert probe["exact_match"] == 0.0
    own = [{"messages": p + [{"role": "assistant", "content": s["answer"]}]}
           for p, s in zip(prompts[:5], probe["samples"])]
    scored = evaluate_model(model, tok, own, batch_size=4, max_new_tokens=6)
    assert scored["exact_match"] == 1.0 and scored["correct"] == 5
    # Teacher-forced over the template's whole completion (Qwen3's adds an empty think block): a share, not all.
    assert 0 < scored["token_accuracy"] <= 1 and scored["answer_tokens"] > 0


def test_puzzles_are_judged_by_the_checker(tiny):
    from trainingd.train.evaluate import is_correct

    rec = make_eval_puzzle(0, 1, 2).record(with_answer_fields=True)
    a, b = rec["syllo"]["words"]
    assert is_correct(rec, f"{a.upper()}\n{b}")
    assert is_correct(rec, f"<think>\nhm\n</think>\n{a}, {b}")
    assert not is_correct(rec, f"{b}\n{a}")
    plain = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Four"}]}
    assert is_correct(plain, " four ") and not is_correct(plain, "five")


def test_evaluating_a_home_records_history_status_and_a_fixed_set(home):
    write_config(home, evaluation={"count": 20, "max_new_tokens": 6, "level": 2},
                 auto_generate={"url": "http://127.0.0.1:9"})  # no generator there: the set is built locally
    h = Home.at(home)
    assert run_eval_command(h, as_json=True) == 0
    first = read_last(h)
    assert first["total"] == 20 and first["adapter"] is None and first["trained_examples"] == 0
    assert 0 <= first["exact_match"] <= 1 and 0 <= first["token_accuracy"] <= 1
    cached = list(h.status_dir.glob("eval_set_level2_seed0_count20_*.jsonl"))
    assert len(cached) == 1 and len(cached[0].read_text().splitlines()) == 20
    assert run_eval_command(h, as_json=False) == 0
    lines = [json.loads(x) for x in h.history.read_text().splitlines()]
    evals = eval_entries(lines)
    assert len(evals) == 2 and evals[1]["eval_set"]["sha256"] == evals[0]["eval_set"]["sha256"]
    assert evals[1]["eval_set"]["source"].endswith("(cached)")
    # The monitor: evaluations have their own view, and the job history does not list them.
    cache = HistoryIndex(h)
    assert [e["exact_match"] for e in views.eval_view(cache)["evals"]] == [e["exact_match"] for e in evals]
    assert views.history_view(cache)["jobs"] == []


def test_an_eval_file_with_reference_answers_is_used_by_trainingd_eval_in_its_own_process(home, tmp_path):
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"say {w}"},
                                                     {"role": "assistant", "content": w}]}) + "\n"
                            for w in ("yes", "no", "maybe")))
    write_config(home, evaluation={"eval_file": str(path), "max_new_tokens": 4})
    h = Home.at(home)
    r = subprocess.run([sys.executable, "-m", "trainingd", "eval", "--home", str(home), "--json"], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == 3
    assert read_last(h)["total"] == 3 and read_last(h)["eval_set"]["source"] == str(path)
    # --level scores on that level's generated set instead (the generator is down: the same puzzles, built here).
    write_config(home, evaluation={"eval_file": str(path), "max_new_tokens": 4, "count": 4},
                 auto_generate={"url": "http://127.0.0.1:9"})
    r = subprocess.run([sys.executable, "-m", "trainingd", "eval", "--home", str(home), "--json", "--level", "2"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["level"] == 2 and out["total"] == 4 and "local" in out["eval_set"]["source"]


@pytest.mark.slow
def test_the_monitor_page_draws_the_held_out_accuracy_chart(tmp_path):
    from playwright.sync_api import sync_playwright

    from trainingd.atomic_ops import append_jsonl
    from trainingd.monitor.browser import CHROMIUM, chart_points, text, wait_until, watch_page
    from trainingd.monitor.server import serve_in_thread

    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium"
    home = Home.at(tmp_path / "h")
    for n, (ex, acc) in enumerate([(0, 0.0), (192, 0.1), (384, 0.32)]):
        append_jsonl(home.history, {"kind": "eval", "trained_examples": ex, "exact_match": acc, "token_accuracy": 0.5,
                                    "correct": int(acc * 50), "total": 50, "finished_at": f"2026-01-01T00:0{n}:00Z"})
    append_jsonl(home.history, {"job_id": "000001-a", "file": "a.jsonl", "state": "done", "result": "ok"})
    server, _ = serve_in_thread(home, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as pw, watch_page(pw, url) as watch:
            page = watch.page
            wait_until(lambda: chart_points(watch.page, "accuracy") == 3, "three evaluations in the chart")
            assert text(page, "eval-last") == "· last 16/50 after 384 examples"
            ys = page.evaluate("() => window.__trainingd.charts.accuracy.data[1]")
            assert ys == [0.0, 0.1, 0.32]
            assert watch.console_errors == [] and watch.foreign_requests() == []
    finally:
        server.shutdown()
        server.server_close()
