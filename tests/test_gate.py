"""The champion/challenger gate: the paired rule, scoring in memory, and the daemon that publishes only what is not worse.

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
