"""What the champion/challenger gate costs per job, and how often it rejects by chance.

    python bench/gate_cost.py --model embedded:tiny-qwen3 --count 200 [--repeats 3] [--train-steps 8]
    python bench/gate_cost.py --model /path/to/smollm2-135m --count 200

For one base (a fresh LoRA on it, then optionally a few training steps so the adapter is not the base):

* the gate's cost per candidate: the seconds of ``gate_eval.score`` (greedy exact match + token accuracy on
  ``--count`` held-out puzzles, and the forgetting probe), against the seconds of the training steps it ran, and
  the cost of scoring a champion that has no stored score (the same call once more, first job only);
* the false-reject rate of the same adapter scored twice: ``--repeats`` pairs, each with other batch sizes and
  the adapter saved and loaded again, judged by ``gate.decide`` at the defaults (exact match, confidence 0.9)
  and with token accuracy at 0.999 -- every rejection is a false one;
* the rule's false-reject rate for two *different* models of equal accuracy (independent errors, simulated):
  the honest type-I error of the paired test at the default confidence.

Prints one JSON document. Times on a shared CPU: compare only within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def simulate_equal_models(n: int, p: float, trials: int, confidence: float, seed: int = 0) -> float:
    from trainingd.lifecycle import gate

    rng = random.Random(seed)
    rejected = 0
    for _ in range(trials):
        a = [int(rng.random() < p) for _ in range(n)]
        b = [int(rng.random() < p) for _ in range(n)]
        s = lambda x: {"exact_match": x, "token_accuracy": x, "forgetting": [0.0]}  # noqa: E731
        rejected += gate.decide(s(a), s(b), gate.Rule(confidence=confidence))["outcome"] == gate.REJECTED
    return rejected / trials


def progress(doc: dict) -> None:
    """A partial result on stderr as it comes (a run cut short by its time limit still says what it measured)."""
    print(json.dumps(doc), file=sys.stderr, flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded:tiny-qwen3")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=16)
    a = p.parse_args()

    import torch

    from trainingd.config import Config
    from trainingd.generator.puzzles import generate
    from trainingd.lifecycle import gate
    from trainingd.models.base_model import fetch, resolve
    from trainingd.train.gate_eval import score
    from trainingd.train.model import load_model, load_tokenizer, set_threads

    set_threads()
    root = Path(tempfile.mkdtemp(prefix="gate-bench-"))
    base = fetch(resolve(a.model, root, models_dir=root / "models"))
    cfg = Config(base_model=str(base))
    tok = load_tokenizer(base)
    dev = torch.device("cpu")
    model = load_model(base, cfg, init_adapter=None, device=dev, precision="fp32")
    records = [q.record(with_answer_fields=True) for q in generate(a.count, 0, 1, held_out=True)]
    train = [q.record() for q in generate(a.train_steps * 4, 1, 1)]

    # A few training steps (batch 4) so the candidate differs from the base.
    model.train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=5e-4)
    t0 = time.monotonic()
    tokens = 0
    for i in range(a.train_steps):
        texts = [tok.apply_chat_template(r["messages"], tokenize=False) for r in train[4 * i:4 * i + 4]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model(**enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        tokens += int(enc["attention_mask"].sum())
    train_s = time.monotonic() - t0
    progress({"phase": "trained", "train_steps": a.train_steps, "train_seconds": round(train_s, 2)})

    first = score(model, tok, records, batch_size=a.batch_size, max_new_tokens=a.max_new_tokens)
    progress({"phase": "scored", "gate_seconds_per_candidate": first["seconds"],
              "gate_seconds_in_training_steps": round(first["seconds"] / max(1e-9, train_s / a.train_steps), 1)})
    saved = root / "adapter"
    model.save_pretrained(str(saved))
    pairs = []
    for r in range(a.repeats):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        again = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
                                          str(saved))
        bs = [7, 16, 64][r % 3]
        second = score(again, tok, records, batch_size=bs, max_new_tokens=a.max_new_tokens)
        default = gate.decide(first, second, gate.Rule())
        strict = gate.decide(first, second, gate.Rule(metric="token_accuracy", confidence=0.999))
        pairs.append({"batch_size": bs, "seconds": second["seconds"], "exact_match_outcome": default["outcome"],
                      "token_accuracy_outcome": strict["outcome"], "discordant": default["paired"]["candidate_better"]
                      + default["paired"]["champion_better"],
                      "token_accuracy_mean_difference": strict["paired"]["mean_difference"]})
    rejects = sum(p_["exact_match_outcome"] == "rejected" or p_["token_accuracy_outcome"] == "rejected"
                  for p_ in pairs)
    em = sum(first["exact_match"]) / len(records)
    doc = {"model": a.model, "held_out": a.count, "probe_prompts": len(first["forgetting"]),
           "train_steps": a.train_steps, "train_seconds": round(train_s, 2),
           "train_seconds_per_step": round(train_s / max(1, a.train_steps), 3), "train_tokens": tokens,
           "gate_seconds_per_candidate": first["seconds"],
           "gate_seconds_in_training_steps": round(first["seconds"] / max(1e-9, train_s / a.train_steps), 1),
           "exact_match": round(em, 4), "forgetting": round(sum(first["forgetting"]) / len(first["forgetting"]), 5),
           "same_adapter_twice": pairs, "same_adapter_false_rejects": f"{rejects}/{len(pairs)}",
           "equal_models_false_reject_rate": {
               str(p_): simulate_equal_models(a.count, p_, 2000, 0.9) for p_ in (0.2, 0.5, 0.8)}}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
