"""The champion/challenger gate: the paired rule, scoring in memory, and the daemon that publishes only what is not
worse.

Run: .venv/bin/python -m pytest tests/test_gate.py -q      (``-m "not slow"`` leaves out real training)
"""

from __future__ import annotations

import json
import random

import pytest

from trainingd.config import ConfigError, parse_config
from trainingd.lifecycle import gate


def scores(exact: list[int], acc: list[float] | None = None, kl: list[float] | None = None) -> dict:
    return {"exact_match": exact, "token_accuracy": acc if acc is not None else [float(x) for x in exact],
            "forgetting": kl if kl is not None else [0.0] * 4}


# ------------------------------------------------------------------------------------------------ the rule
def test_the_same_scores_twice_are_never_rejected_whatever_the_metric_and_confidence():
    rng = random.Random(0)
    for trial in range(200):
        n = rng.randint(1, 300)
        ex = [rng.randint(0, 1) for _ in range(n)]
        acc = [rng.random() for _ in range(n)]
        s = scores(ex, acc, [rng.random() for _ in range(5)])
        for metric in gate.METRICS:
            for conf in (0.5, 0.9, 0.999):
                d = gate.decide(s, s, gate.Rule(metric=metric, confidence=conf, max_forgetting=0.1))
                assert d["outcome"] == gate.PROMOTED, (trial, metric, conf, d["reason"])
                assert d["paired"]["upper_bound"] == 0.0


def test_a_candidate_that_loses_many_paired_examples_is_rejected_and_a_few_are_noise():
    champ = scores([1] * 100)
    few = scores([0] * 2 + [1] * 98)  # two lost: could be chance on 100 examples
    many = scores([0] * 15 + [1] * 85)
    rule = gate.Rule(confidence=0.9)
    assert gate.decide(champ, few, rule)["outcome"] == gate.PROMOTED
    d = gate.decide(champ, many, rule)
    assert d["outcome"] == gate.REJECTED and "exact_match is worse" in d["reason"]
    assert d["paired"]["champion_better"] == 15 and d["paired"]["candidate_better"] == 0
    assert d["champion"]["exact_match"] == 1.0 and d["candidate"]["exact_match"] == 0.85


def test_exact_rule_with_min_delta_0_is_the_one_sided_exact_mcnemar_test():
    # 6 lost, 0 won: P(X <= 0 | n=6, 1/2) = 1/64 = 0.0156 -> rejected at 0.95, promoted at 0.99.
    champ, cand = scores([1] * 6 + [0] * 10), scores([0] * 16)
    assert gate.decide(champ, cand, gate.Rule(confidence=0.95))["outcome"] == gate.REJECTED
    assert gate.decide(champ, cand, gate.Rule(confidence=0.99))["outcome"] == gate.PROMOTED
    # Discordant pairs that cancel out are not evidence of anything.
    even = scores([1, 0] * 20), scores([0, 1] * 20)
    assert gate.decide(*even, gate.Rule(confidence=0.5))["outcome"] == gate.PROMOTED


def test_a_slow_slide_is_stopped_by_the_best_adapter_published_so_far():
    # Two steps down, each one losing a few more examples than it wins against the live adapter (never
    # confidently worse than it), together lose 21 and win 10 against the best one, which its scores (kept beside
    # each later champion) catch.
    def answered(*ranges: range) -> list[int]:
        right = {i for r in ranges for i in r}
        return [int(i in right) for i in range(200)]

    rule = gate.Rule()
    best = {**scores(answered(range(0, 60))), "job_id": "j1", "generation_id": "g1"}  # 0.30
    champ = {**scores(answered(range(0, 48), range(60, 66))), "job_id": "j2", "generation_id": "g2"}  # 0.27
    assert gate.decide(best, champ, rule)["outcome"] == gate.PROMOTED
    champ["best"] = gate.best_after_promotion(best, champ, "exact_match")
    assert champ["best"]["job_id"] == "j1" and champ["best"]["exact_match"] == best["exact_match"]
    slid = scores(answered(range(0, 39), range(60, 70)))  # 0.245: 9 lost and 4 won against the champion
    without_best = {k: v for k, v in champ.items() if k != "best"}
    assert gate.decide(without_best, slid, rule)["outcome"] == gate.PROMOTED
    d = gate.decide(champ, slid, rule)
    assert d["outcome"] == gate.REJECTED and "worse than the best adapter published" in d["reason"], d["reason"]
    assert "job j1" in d["reason"] and d["best"]["exact_match"] == 0.3
    assert (d["best"]["paired"]["champion_better"], d["best"]["paired"]["candidate_better"]) == (21, 10)
    # A candidate as good as the best passes and becomes the best itself (no "best" kept beside it).
    back = scores(answered(range(0, 60)))
    assert gate.decide(champ, back, rule)["outcome"] == gate.PROMOTED
    assert gate.best_after_promotion(champ, back, "exact_match") is None
    # The same adapter scored twice is never rejected, a stored best equal to the champion changes nothing, and a
    # best of another length (another held-out set) is ignored.
    same = {**without_best, "best": {k: without_best[k] for k in gate.BEST_KEYS}}
    assert gate.decide(same, without_best, rule)["outcome"] == gate.PROMOTED
    assert "best" not in gate.decide(same, without_best, rule)
    other = {**champ, "best": {**best, "exact_match": [1] * 10}}
    assert "best" not in gate.decide(other, slid, rule)


def test_clopper_pearson_upper_bound_matches_the_binomial_tail():
    for k, n in ((0, 10), (3, 10), (7, 20)):
        p = gate.clopper_pearson_upper(k, n, 0.95)
        assert abs(gate._binom_cdf(k, n, p) - 0.05) < 1e-6
    assert gate.clopper_pearson_upper(5, 5, 0.9) == 1.0


def test_min_delta_tolerates_or_demands_and_token_accuracy_uses_a_normal_bound():
    champ = scores([1] * 50, [0.9] * 50)
    cand = scores([1] * 50, [0.85] * 50)
    assert gate.decide(champ, cand, gate.Rule(metric="exact_match"))["outcome"] == gate.PROMOTED
    assert gate.decide(champ, cand, gate.Rule(metric="token_accuracy"))["outcome"] == gate.REJECTED
    assert gate.decide(champ, cand, gate.Rule(metric="token_accuracy", min_delta=-0.1))["outcome"] == gate.PROMOTED
    # A positive min_delta demands a shown improvement: an unchanged candidate fails it.
    assert gate.decide(champ, champ, gate.Rule(min_delta=0.01))["outcome"] == gate.REJECTED


def test_forgetting_above_the_limit_and_above_the_champion_rejects():
    champ = scores([1] * 10, kl=[0.2] * 4)
    far = scores([1] * 10, kl=[0.9] * 4)
    rule = gate.Rule(max_forgetting=0.5)
    d = gate.decide(champ, far, rule)
    assert d["outcome"] == gate.REJECTED and "forgetting" in d["reason"] and d["candidate"]["forgetting"] == 0.9
    # A champion already past the limit: a candidate that forgets less is not held back by it.
    assert gate.decide(scores([1] * 10, kl=[1.0] * 4), far, rule)["outcome"] == gate.PROMOTED
    assert gate.decide(champ, far, gate.Rule(max_forgetting=None))["outcome"] == gate.PROMOTED


def test_rejections_in_row_count_from_the_history_and_reset():
    h = [{"state": "done", "result": "ok"}, {"state": "done", "result": "rejected"}, {"kind": "eval"},
         {"state": "failed", "result": "data_error"}, {"state": "done", "result": "rejected"}]
    assert gate.rejections_in_row(h) == 2
    assert gate.rejections_in_row(h + [{"kind": gate.STREAK_RESET}]) == 0
    assert gate.rejections_in_row(h + [{"state": "done", "result": "ok"}]) == 0
    assert gate.regressing_condition(2, 3, []) is None and gate.regressing_condition(2, 0, []) is None
    cond = gate.regressing_condition(3, 3, ["x"])
    assert cond["kind"] == "regressing" and cond["rejections_in_row"] == 3 and cond["ways_out"] == ["x"]


def test_gate_config_has_defaults_and_refuses_bad_values():
    cfg = parse_config({})
    assert cfg.gate.enabled is False and cfg.gate.metric == "exact_match" and cfg.gate.max_rejections_in_row == 3
    assert parse_config({"gate": {"enabled": True, "max_forgetting": None}}).gate.max_forgetting is None
    for bad in ({"metric": "bleu"}, {"confidence": 1.5}, {"max_rejections_in_row": -1}, {"max_forgetting": -1},
                {"treshold": 1}):
        with pytest.raises(ConfigError, match="gate"):
            parse_config({"gate": bad})


# ------------------------------------------------------------------------------------------------ scoring
@pytest.fixture(scope="module")
def peft_tiny(tiny_model):
    from trainingd.config import Config
    from trainingd.train.model import load_model, load_tokenizer

    import torch

    model = load_model(tiny_model, Config(base_model=str(tiny_model)), init_adapter=None,
                       device=torch.device("cpu"), precision="fp32")
    return model, load_tokenizer(tiny_model)


def test_the_same_adapter_scored_twice_gives_identical_scores_and_is_promoted(peft_tiny):
    from trainingd.generator.puzzles import generate
    from trainingd.train.gate_eval import score

    model, tok = peft_tiny
    records = [p.record(with_answer_fields=True) for p in generate(40, 3, 1, held_out=True)]
    a = score(model, tok, records, batch_size=16, max_new_tokens=8)
    b = score(model, tok, records[::-1], batch_size=7, max_new_tokens=8)  # another order and batching
    b = {k: v[::-1] if isinstance(v, list) and k != "samples" else v for k, v in b.items()}
    assert a["exact_match"] == b["exact_match"] and len(a["forgetting"]) > 10
    d = gate.decide(a, b, gate.Rule(metric="token_accuracy", confidence=0.999))
    assert d["outcome"] == gate.PROMOTED, d["reason"]
    # A fresh LoRA is the base: nothing is forgotten.
    assert max(a["forgetting"]) < 1e-6


def test_a_changed_adapter_moves_the_forgetting_probe(peft_tiny):
    import torch

    from trainingd.train.gate_eval import forgetting
    from trainingd.train.probe_prompts import PROBE

    model, tok = peft_tiny
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    try:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
        kl = forgetting(model, tok, PROBE[:6])
        assert min(kl) > 1e-3
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
    assert max(forgetting(model, tok, PROBE[:6])) < 1e-6


# ------------------------------------------------------------------------------------------------ the daemon
ANSWERS = ["yes it is", "no it is not", "maybe so"]


def qa(i: int, wrong: int = 0) -> dict:
    """Question i and its answer: the same short answer for every question (a pattern the tiny model learns in a few
    steps); ``wrong`` > 0 gives another answer to every question (a file of wrong answers)."""
    return {"messages": [{"role": "user", "content": f"is colour {i} a colour?"},
                         {"role": "assistant", "content": ANSWERS[wrong % len(ANSWERS)]}]}


def drop(root, name: str, lines: list) -> None:
    from conftest import write_jsonl

    tmp = write_jsonl(root / "inbox" / f".{name}.tmp", lines)
    tmp.rename(root / "inbox" / name)


def run_once(root, *argv: str):
    import os
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run([sys.executable, str(REPO / "training_daemon.py"), "--home", str(root), "--once", *argv],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=900)


def cli(root, *argv: str, script: str | None = None):
    import subprocess
    import sys

    from conftest import REPO

    cmd = [sys.executable, str(REPO / script), "--home", str(root), *argv] if script else \
        [sys.executable, "-m", "trainingd", "--home", str(root), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)


def checkers(root) -> tuple[list, list]:
    """The problems state_tracker.py --check and comprehensive_health_check.py's invariants report."""
    from trainingd.checks import health
    from trainingd.paths import Home

    h = Home.at(root)
    inv = next(c for c in health.run_checks(h)["checks"] if c["check"] == "invariants")
    return [p["problem"] for p in health.consistency(h)["problems"]], [p["problem"] for p in inv["problems"]]


def gate_home(home, **gate_cfg):
    from conftest import write_config, write_jsonl

    write_jsonl(home / "heldout.jsonl", [qa(i) for i in range(16)])
    write_config(home, learning_rate=2e-2, batch_size=4, epochs=4, save_steps=1000, layer_stats_steps=0,
                 evaluation={"eval_file": "heldout.jsonl", "max_new_tokens": 6, "batch_size": 16,
                             "after_each_job": True},
                 gate={"enabled": True, "max_forgetting": None, **gate_cfg})
    return home


@pytest.mark.slow
def test_a_worse_candidate_is_rejected_kept_reported_and_promoted_by_hand(home):
    from trainingd.contracts.status import read_history, read_status
    from trainingd.lifecycle import snapshots
    from trainingd.paths import Home

    gate_home(home, max_rejections_in_row=5)
    drop(home, "good.jsonl", [qa(i) for i in range(16)] * 4)
    res = run_once(home)
    assert res.returncode == 0, res.stderr[-3000:]
    h = Home.at(home)
    first = [e for e in read_history(h) if e.get("state")]
    assert [e["result"] for e in first] == ["ok"] and first[0]["gate"]["outcome"] == "promoted"
    assert first[0]["gate"]["champion_source"] == "scored at job start"  # the base, scored before step 1
    champion = (home / "current_model" / "adapter_model.safetensors").read_bytes()
    state_before = json.loads((home / "current_model" / "adapter_state.json").read_text())
    assert json.loads((home / "current_model" / "gate_scores.json").read_text())["generation_id"] == \
        state_before["generation_id"]
    # The gate's scores of the published candidate are the evaluation after the job: no second load.
    evals = [e for e in read_history(h) if e.get("kind") == "eval"]
    assert [(e["trigger"], e["job_id"]) for e in evals] == [("gate", first[0]["job_id"])]
    assert evals[0]["exact_match"] == round(first[0]["gate"]["candidate"]["exact_match"], 4)
    assert evals[0]["total"] == 16 and evals[0]["trained_examples"] == 64
    assert not (home / "logs" / "eval_output.log").exists()

    drop(home, "wrong.jsonl", [qa(i, wrong=1) for i in range(16)] * 4)
    res = run_once(home)
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = [e for e in read_history(h) if e.get("state")]
    assert [e["result"] for e in jobs] == ["ok", "rejected"], jobs
    assert len([e for e in read_history(h) if e.get("kind") == "eval"]) == 1  # nothing new was published
    g = jobs[1]["gate"]
    assert g["outcome"] == "rejected" and "exact_match is worse" in jobs[1]["reason"]
    assert g["champion_source"] == "stored"  # the champion's scores came from beside it: no second scoring
    assert g["candidate"]["exact_match"] < g["champion"]["exact_match"]
    # The champion stays bit-identical; the candidate is kept as a pinned snapshot with both scores.
    assert (home / "current_model" / "adapter_model.safetensors").read_bytes() == champion
    assert json.loads((home / "current_model" / "adapter_state.json").read_text()) == state_before
    snap = snapshots.find_snapshot(h, g["snapshot"])
    m = json.loads((snap / "manifest.json").read_text())
    assert m["reason"] == "rejected" and m["gate"]["champion"] and m["gate"]["candidate"]
    assert (snap / "PINNED").is_file() and (snap / "adapter_model.safetensors").read_bytes() != champion
    done = [p for p in (home / "queue" / "done").iterdir()]
    rejected_job = next(p for p in done if json.loads((p / "job.json").read_text()).get("gate_outcome"))
    meta = json.loads((rejected_job / "job.json").read_text())
    assert meta["gate_outcome"] == "rejected" and meta["result"]["gate"]["snapshot"] == snap.name
    status = read_status(h)
    assert status["gate"]["last"]["outcome"] == "rejected" and status["gate"]["rejections_in_row"] == 1
    out = cli(home, "status", script="training_controller.py")
    line = next(x for x in out.stdout.splitlines() if x.startswith("gate:"))
    assert "rejected" in line and "vs champion" in line and snap.name in line
    assert checkers(home) == ([], [])
    lineage = json.loads(cli(home, "--json", "lineage").stdout)
    assert [c["file"] for c in lineage["chain"]] == ["good.jsonl"]
    assert [(r["file"], r["snapshot"]) for r in lineage["rejected"]] == [("wrong.jsonl", snap.name)]
    # Both checkers notice a rejected job whose candidate is gone.
    hidden = snap.parent / ".hidden"
    snap.rename(hidden)
    tracker, doctor = checkers(home)
    assert any("rejected by the gate" in p for p in tracker) and any("rejected by the gate" in p for p in doctor)
    hidden.rename(snap)

    # trainingd promote publishes it by hand (the rollback machinery: the replaced one is kept too).
    r = cli(home, "--json", "promote", snap.name)
    assert r.returncode == 0, r.stderr
    assert (home / "current_model" / "adapter_model.safetensors").read_bytes() == \
        (snap / "adapter_model.safetensors").read_bytes()
    trained = json.loads((home / "current_model" / "adapter_state.json").read_text())["trained"]
    assert [t["job_id"] for t in trained][-1] == meta["id"]
    assert json.loads(r.stdout)["backup"] and checkers(home) == ([], [])
    assert [e.get("kind") for e in read_history(h)][-1] == "gate_reset"


@pytest.mark.slow
def test_a_streak_of_rejections_holds_the_daemon_as_regressing(home):
    from trainingd.contracts.status import read_history, read_status
    from trainingd.paths import Home

    gate_home(home, max_rejections_in_row=2, metric="token_accuracy")
    from conftest import write_config

    write_config(home, keep_rejected=1)  # the older of the two rejected candidates is pruned, and says so
    drop(home, "a_good.jsonl", [qa(i) for i in range(16)] * 4)
    for k in (1, 2):
        drop(home, f"b_wrong{k}.jsonl", [qa(i, wrong=k) for i in range(16)] * 4)
    drop(home, "c_next.jsonl", [qa(i) for i in range(16)])
    res = run_once(home)
    assert res.returncode == 3, (res.returncode, res.stderr[-3000:])  # --once: held, nothing will change by itself
    h = Home.at(home)
    assert [e["result"] for e in read_history(h) if e.get("state")] == ["ok", "rejected", "rejected"]
    status = read_status(h)
    assert status["condition"]["kind"] == "regressing" and status["condition"]["rejections_in_row"] == 2
    assert any("trainingd promote" in w for w in status["condition"]["ways_out"])
    assert status["queue"]["pending"]["normal"] == 1  # the next file waits instead of being burnt through
    kept = [p.name for p in (home / "snapshots").iterdir() if p.name.endswith("-rejected")]
    metas = [json.loads((p / "job.json").read_text()) for p in sorted((home / "queue" / "done").iterdir())]
    pruned = [m for m in metas if m.get("gate_snapshot_pruned")]
    assert len(kept) == 1 and len(pruned) == 1 and pruned[0]["original_name"] == "b_wrong1.jsonl", (kept, pruned)
    assert pruned[0]["gate_snapshot_pruned"]["name"] != kept[0]
    assert checkers(home) == ([], [])
    # One way out: a person looks and resumes; the streak starts again and the waiting file is trained.
    import os
    import subprocess
    import sys

    from conftest import REPO, wait_for

    proc = subprocess.Popen([sys.executable, str(REPO / "training_daemon.py"), "--home", str(home)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        wait_for(lambda: ((read_status(h) or {}).get("condition") or {}).get("kind") == "regressing"
                 and (read_status(h) or {}).get("daemon", {}).get("pid") == proc.pid, "the held daemon", 120)
        r = cli(home, "resume", "--wait", "--timeout", "60", script="training_controller.py")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: len([e for e in read_history(h) if e.get("state")]) == 4, "the waiting job", 600)
        assert any(e.get("kind") == "gate_reset" for e in read_history(h))
    finally:
        cli(home, "stop", "--wait", "--timeout", "120", script="training_controller.py")
        proc.wait(timeout=180)
    assert read_status(h)["condition"] is None and checkers(home) == ([], [])


@pytest.mark.slow
def test_a_gate_without_a_held_out_set_is_a_config_error_not_a_retried_crash(home):
    from trainingd.contracts.status import read_status
    from trainingd.paths import Home

    from conftest import write_config

    gate_home(home)
    write_config(home, evaluation={"eval_file": "missing.jsonl"})
    drop(home, "good.jsonl", [qa(i) for i in range(8)])
    res = run_once(home)
    assert res.returncode == 3, res.stderr[-3000:]
    status = read_status(Home.at(home))
    assert "gate.enabled needs a held-out set" in status["last_error"]["message"]
    assert status["queue"]["pending"]["normal"] == 1 and status["queue"]["failed"] == 0
    assert not (home / "current_model" / "adapter_model.safetensors").exists()
