"""The curriculum: the auto-generated level rises with held-out exact match at the current level, and the
held-out set follows it.

Run: .venv/bin/python -m pytest tests/test_curriculum.py -q

The level is replayed from ``status/history.jsonl`` by ``curriculum_level``; the generator asked is the real
reference server on an ephemeral port, and the held-out set is loaded by the evaluator's own ``load_eval_set``.
"""

from __future__ import annotations

import json

import pytest

from trainingd.atomic_ops import append_jsonl
from trainingd.config import AutoGenerateConfig, ConfigError, CurriculumConfig, parse_config
from trainingd.daemon.autogen import AutoGenerator, curriculum_level
from trainingd.generator.puzzles import check_answer
from trainingd.generator.server import serve_in_thread
from trainingd.paths import Home


def ev(level, em, job="j"):
    return {"kind": "eval", "level": level, "exact_match": em, "job_id": job, "finished_at": "t"}


def cfg(**cur) -> AutoGenerateConfig:
    return AutoGenerateConfig(enabled=True, level=1, curriculum=CurriculumConfig(**cur))


@pytest.fixture
def generator():
    server, url = serve_in_thread("127.0.0.1", 0)
    yield url
    server.shutdown()
    server.server_close()


def test_level_rises_only_after_min_evals_in_a_row_at_the_current_level():
    c = cfg(promote_at=0.8, min_evals=2)
    assert curriculum_level(c, [])["level"] == 1
    assert curriculum_level(c, [ev(1, 0.9)])["level"] == 1
    assert curriculum_level(c, [ev(1, 0.9), ev(1, 0.5), ev(1, 0.85)])["level"] == 1, "the run was broken"
    up = curriculum_level(c, [ev(1, 0.5), ev(1, 0.8), ev(1, 0.9, "job7")])
    assert up["level"] == 2 and up["promoted_after"]["job_id"] == "job7"
    assert "promoted from 1" in up["reason"] and "none at level 2 yet" in up["reason"]
    # A score at level 1 after the promotion says nothing about level 2; two at level 2 take it to 3.
    hist = [ev(1, 0.9), ev(1, 0.9), ev(1, 0.95), ev(2, 0.81), ev(2, 0.8)]
    assert curriculum_level(c, hist)["level"] == 3
    assert curriculum_level(c, hist[:4])["level"] == 2
    assert "1 of 2 in a row" in curriculum_level(c, hist[:4])["reason"]


def test_a_plateau_raises_the_level_once_the_level_is_learned_at_all():
    c = cfg(promote_at=0.8, min_evals=2, plateau_evals=3, plateau_min=0.2)
    # The shape of a real hour at level 1 (docs/learning_curve_gate_on.json): a climb, then no new best.
    climb = [ev(1, 0.1), ev(1, 0.18), ev(1, 0.3, "best"), ev(1, 0.3), ev(1, 0.27)]
    held = curriculum_level(c, climb)
    assert held["level"] == 1 and held["best"] == 0.3 and held["since_best"] == 2
    assert "2 of 3 without a new best" in held["reason"]
    up = curriculum_level(c, climb + [ev(1, 0.25, "job9")])
    assert up["level"] == 2 and up["promoted_after"]["why"] == "plateau"
    assert up["promoted_after"]["job_id"] == "job9" and up["promoted_after"]["best"] == 0.3
    assert "a plateau: no new best in 3 evaluations and rejected candidates (best 0.30)" in up["reason"]
    # A new best restarts the count; a level not learned at all (best below plateau_min) is no plateau.
    assert curriculum_level(c, climb + [ev(1, 0.31), ev(1, 0.2), ev(1, 0.2)])["level"] == 1
    assert curriculum_level(c, [ev(1, 0.1)] * 10)["level"] == 1
    assert curriculum_level(cfg(plateau_evals=0), climb * 3)["level"] == 1, "plateau_evals 0 is off"
    # Candidates the gate rejected on this level's held-out set count as no new best (the gate publishes nothing, so
    # a plateau shows as rejections); one scored on another set, or on no level, does not count.
    def rejected(level, em, job="r"):
        return {"job_id": job, "state": "done", "result": "rejected",
                "gate": {"outcome": "rejected", "candidate": {"exact_match": em}, "eval_set": {"level": level}}}
    held = climb[:3] + [rejected(1, 0.25), rejected(2, 0.9), {**rejected(1, 0.2), "gate": {"outcome": "rejected"}}]
    assert curriculum_level(c, held)["since_best"] == 1
    up = curriculum_level(c, climb[:3] + [rejected(1, 0.25), rejected(1, 0.26), rejected(1, 0.24, "r3")])
    assert up["level"] == 2 and up["promoted_after"]["job_id"] == "r3" and up["promoted_after"]["exact_match"] == 0.24
    assert curriculum_level(c, [rejected(1, 0.5)] * 5)["level"] == 1, "no best yet: nothing to plateau at"
    # At level 2 the count starts afresh: level 1's best says nothing about level 2.
    assert curriculum_level(c, climb + [ev(1, 0.25), ev(2, 0.05), ev(2, 0.04)])["level"] == 2


def test_evaluations_without_a_level_other_lines_and_the_top_level_are_respected():
    c = cfg(promote_at=0.5, min_evals=1, max_level=2)
    junk = [{"kind": "eval", "exact_match": 1.0}, {"state": "done", "level": 1, "exact_match": 1.0},
            {"kind": "eval", "level": 1, "exact_match": True}, "not a dict", ev(3, 1.0)]
    assert curriculum_level(c, junk)["level"] == 1
    top = curriculum_level(c, [ev(1, 0.6), ev(2, 0.9), ev(2, 0.9)])
    assert top["level"] == 2 and "the top" in top["reason"]
    off = curriculum_level(cfg(enabled=False, min_evals=1), [ev(1, 1.0)] * 3)
    assert off["level"] == 1 and "curriculum off" in off["reason"]


def test_bad_curriculum_settings_are_refused():
    for bad in ({"promote_at": 0}, {"promote_at": 1.5}, {"min_evals": 0}, {"max_level": 6}, {"plateau_evals": -1},
                {"plateau_min": 1.5}, {"review": 0.95}, {"review": -0.1}):
        with pytest.raises(ConfigError, match="auto_generate.curriculum"):
            parse_config({"auto_generate": {"curriculum": bad}})
    with pytest.raises(ConfigError, match="auto_generate.curriculum.promote"):
        parse_config({"auto_generate": {"curriculum": {"promote": 0.5}}})
    assert parse_config({}).auto_generate.curriculum.enabled is True


def test_the_generator_is_asked_for_the_promoted_level_and_the_status_says_why(tmp_path, generator):
    home = Home.at(tmp_path)
    home.inbox.mkdir()
    home.status_dir.mkdir()
    c = AutoGenerateConfig(enabled=True, url=generator, count=8, min_interval_s=0, max_pending_generated=5,
                           curriculum=CurriculumConfig(promote_at=0.7, min_evals=2, review=0.0))
    ag = AutoGenerator(home)

    def fetch_one() -> list[dict]:
        before = set(home.inbox.iterdir())
        ag.tick(c, pending_jobs=0, may_start=True)
        ag.thread.join(10)
        ag.tick(c, pending_jobs=0, may_start=False)
        (new,) = set(home.inbox.iterdir()) - before
        return [json.loads(x) for x in new.read_text().splitlines()]

    assert all(r["messages"][0]["content"].count("Clue ") == 1 for r in fetch_one())
    st = ag.status()
    assert st["level"] == 1 and "the start" in st["level_reason"] and st["last"]["level"] == 1
    append_jsonl(home.history, ev(1, 0.72, "job-a"))
    append_jsonl(home.history, ev(1, 0.74, "job-b"))
    level2 = fetch_one()
    assert all(r["messages"][0]["content"].count("Clue ") == 2 for r in level2), "level 2 hides two words"
    st = ag.status()
    assert st["level"] == 2 and st["last"]["level"] == 2 and "promoted from 1" in st["level_reason"]
    assert st["curriculum"]["promoted_after"]["job_id"] == "job-b"
    # training_controller.py status says it in one line
    from trainingd.cli.formatting import format_summary
    from trainingd.contracts.status import compose_status

    doc = compose_status(daemon={"pid": 1}, status="idle")
    doc["auto_generate"] = st
    text = format_summary({"home": str(tmp_path), "status": doc, "queue": [], "daemon_running": True})
    line = next(x for x in text.splitlines() if x.startswith("generate:"))
    assert line.startswith("generate:  level 2 (idle): level 2: promoted from 1"), line
    fresh = AutoGenerator(home)
    fresh.tick(c, pending_jobs=9, may_start=False)
    assert fresh.status()["level"] == 2, "the level survives a restart (it is the history's)"


def test_above_the_first_level_a_share_of_each_file_reviews_the_levels_passed(tmp_path, generator):
    from trainingd.daemon.autogen import fetch_batch
    from trainingd.generator.puzzles import generate

    def clues(path) -> list[int]:
        return [json.loads(x)["messages"][0]["content"].count("Clue ") for x in path.read_text().splitlines()]

    (tmp_path / "inbox").mkdir()
    path, n = fetch_batch(generator, count=400, seed=3, level=3, timeout_s=30, tmp_dir=tmp_path / "tmp",
                          inbox=tmp_path / "inbox", review=0.25, review_from=1)
    counts = clues(path)
    assert n == 400 and set(counts) == {1, 2, 3}
    assert 0.18 < sum(c < 3 for c in counts) / n < 0.32, "about a quarter reviews levels 1 and 2"
    # Deterministic per seed, and the same puzzles the generator module builds; no review at the first level,
    # none asked for, or on a held-out set.
    assert [p.level for p in generate(400, 3, 3, review=0.25, review_from=1)] == counts
    assert {p.level for p in generate(50, 3, 3, review=0.25, review_from=3)} == {3}
    assert {p.level for p in generate(50, 3, 3)} == {3}
    assert {p.level for p in generate(50, 3, 3, held_out=True, review=0.5)} == {3}
    # The daemon asks for it above the starting level only, with the curriculum's share.
    home = Home.at(tmp_path / "home")
    home.inbox.mkdir(parents=True)
    home.status_dir.mkdir()
    c = AutoGenerateConfig(enabled=True, url=generator, count=40, min_interval_s=0, max_pending_generated=5,
                           curriculum=CurriculumConfig(promote_at=0.7, min_evals=1))
    append_jsonl(home.history, ev(1, 0.9, "job-a"))
    ag = AutoGenerator(home)
    ag.tick(c, pending_jobs=0, may_start=True)
    ag.thread.join(10)
    ag.tick(c, pending_jobs=0, may_start=False)
    (batch,) = home.inbox.iterdir()
    assert set(clues(batch)) == {1, 2} and ag.status()["curriculum"]["review"] == 0.25
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError, match="400"):
        urllib.request.urlopen(f"{generator}/generate?count=2&level=2&review=nan", timeout=10)


def test_the_held_out_set_follows_the_level(tmp_path, generator):
    from trainingd.train.evaluate import load_eval_set

    home = Home.at(tmp_path)
    home.status_dir.mkdir()
    config = parse_config({"auto_generate": {"url": generator, "curriculum": {"promote_at": 0.5, "min_evals": 1}},
                           "evaluation": {"count": 6}})
    records, desc = load_eval_set(home, config)
    assert desc["level"] == 1 and all(r["syllo"]["level"] == 1 for r in records)
    append_jsonl(home.history, ev(1, 0.6))
    records, desc = load_eval_set(home, config)
    assert desc["level"] == 2 and all(r["syllo"]["level"] == 2 and len(r["syllo"]["words"]) == 2 for r in records)
    assert all(check_answer(r["syllo"], r["messages"][-1]["content"]) for r in records)
    pinned = parse_config({"auto_generate": {"url": generator}, "evaluation": {"count": 6, "level": 4}})
    assert load_eval_set(home, pinned)[1]["level"] == 4, "an explicit evaluation.level is kept"


def test_a_level_raised_by_rejections_ends_the_gates_streak_instead_of_holding_the_stream(tmp_path):
    from trainingd.contracts.status import read_history
    from trainingd.daemon.loop import Daemon

    def rejected(job):
        return {"job_id": job, "state": "done", "result": "rejected", "finished_at": "t",
                "gate": {"outcome": "rejected", "candidate": {"exact_match": 0.2}, "eval_set": {"level": 1}}}

    def daemon(curriculum: bool) -> Daemon:
        h = Home.at(tmp_path / f"home-{curriculum}")
        h.history.parent.mkdir(parents=True)
        append_jsonl(h.history, ev(1, 0.3, "j1"))
        d = Daemon(h, parse_config({"gate": {"enabled": True, "max_rejections_in_row": 2},
                                    "auto_generate": {"curriculum": {"enabled": curriculum, "plateau_evals": 2}}}))
        d._level = d.autogen.curriculum(d.cfg.auto_generate)["level"]  # as startup() leaves it
        for job in ("r1", "r2"):
            append_jsonl(h.history, rejected(job))
            d.end_streak_on_a_new_level()
        return d

    on = daemon(True)
    assert on._level == 2 and on.refresh_gate() is None, "the level rose: the streak on level 1 ends"
    reset = [e for e in read_history(on.home) if e.get("kind") == "gate_reset"]
    assert len(reset) == 1 and "level 2" in reset[0]["why"]
    off = daemon(False)  # without the curriculum two rejections in a row hold the daemon, as before
    assert off.refresh_gate()["kind"] == "regressing"
