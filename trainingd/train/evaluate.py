"""Held-out evaluation of a home's live adapter: greedy exact match and mean token accuracy.

    python -m trainingd.train.evaluate --home H [--trigger after_job|cli] [--job-id ID]   (the daemon runs this)
    trainingd eval [--home H] [--json]                                                     (the same, by hand)

The held-out set is ``evaluation.eval_file`` (JSONL chat lines whose last assistant turn is the reference; a
``syllo`` field, as the generator's ``/eval`` writes, makes the puzzle checker judge the answer), or else
``evaluation.count`` puzzles from the generator's ``/eval`` (seed ``evaluation.seed``, level
``evaluation.level`` or the curriculum's current level), fetched once per level and kept in ``status/`` so that every
evaluation of the home uses the same set. When the generator cannot be reached, the same puzzles are built
locally from ``trainingd.generator.puzzles`` (they are deterministic).

* exact match: the greedy answer (batched, left-padded prompts, ``max_new_tokens``) is right -- by the puzzle
  checker for SYLLO records, by the whitespace- and case-normalised reference otherwise;
* token accuracy: teacher-forced, the fraction of the reference's completion tokens (through the end-of-turn
  token) that are the model's argmax prediction.

The result goes to ``status/eval_result.json`` and, as ``{"kind": "eval", ...}``, to ``status/history.jsonl``
with the number of examples trained so far (from the history's done jobs) for the learning curve.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import sys
import time
import urllib.request
from pathlib import Path

import torch

from trainingd.atomic_ops import append_jsonl, atomic_write_json, read_jsonl
from trainingd.models.base_model import resolve
from trainingd import exit_codes as ec
from trainingd.config import Config, ConfigError, load_config
from trainingd.contracts.adapter_state import read_adapter_state, trained_count
from trainingd.contracts.job import now_iso
from trainingd.contracts.eval_result import HISTORY_KIND, eval_set_cache, result_path, trained_so_far
from trainingd.daemon.autogen import read_curriculum
from trainingd.generator.puzzles import check_answer, generate as generate_puzzles
from trainingd.paths import Home
from trainingd.train import checkpoint as ckpt
from trainingd.train.build_base import fetch
from trainingd.train.model import load_tokenizer, set_threads

log = logging.getLogger("trainingd.eval")

_THINK = re.compile(r"<think>.*?</think>", re.S)


# ------------------------------------------------------------------------------------------------ data
def fetch_eval_set(url: str, *, count: int, seed: int, level: int, timeout_s: float = 60.0) -> list[dict]:
    """``count`` held-out puzzles from the generator's ``/eval``."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/eval?count={count}&seed={seed}&level={level}",
                                timeout=timeout_s) as r:
        records = [json.loads(line) for line in r.read().decode("utf-8").splitlines() if line.strip()]
    if len(records) != count:
        raise ValueError(f"/eval returned {len(records)} records, asked for {count}")
    return records


def load_eval_set(home: Home, cfg: Config, level: int | None = None) -> tuple[list[dict], dict]:
    """The held-out records and a description of where they came from (``level``: that level's generated set)."""
    ev = cfg.evaluation
    if ev.eval_file and level is None:
        path = Path(ev.eval_file).expanduser()
        path = path if path.is_absolute() else home.root / path
        records = [r for r in read_jsonl(path) if isinstance(r, dict)]
        if not records:
            raise ValueError(f"evaluation.eval_file {path} holds no JSON lines")
        source = str(path)
    else:
        level = level or ev.level or read_curriculum(home, cfg.auto_generate)["level"]
        cache = eval_set_cache(home, ev.seed, level, ev.count)
        if cache.is_file():
            records = read_jsonl(cache)
            source = f"{cache.name} (cached)"
        else:
            try:
                records = fetch_eval_set(cfg.auto_generate.url, count=ev.count, seed=ev.seed, level=level)
                source = f"{cfg.auto_generate.url}/eval"
            except (OSError, ValueError) as e:
                log.warning("generator /eval not reachable (%s); building the same held-out puzzles locally", e)
                records = [p.record(with_answer_fields=True)
                           for p in generate_puzzles(ev.count, ev.seed, level, held_out=True)]
                source = "trainingd.generator.puzzles (local)"
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
            os.replace(tmp, cache)
    for i, r in enumerate(records):
        msgs = r.get("messages")
        if not isinstance(msgs, list) or len(msgs) < 2 or msgs[-1].get("role") != "assistant":
            raise ValueError(f"held-out record {i + 1} has no final assistant turn to compare with")
    digest = hashlib.sha256("".join(json.dumps(r, sort_keys=True) for r in records).encode()).hexdigest()
    levels = {r["syllo"].get("level") for r in records if isinstance(r.get("syllo"), dict)}
    level = levels.pop() if len(levels) == 1 and all(isinstance(r.get("syllo"), dict) for r in records) else None
    return records, {"source": source, "count": len(records), "sha256": digest, "level": level}


def is_correct(record: dict, answer: str) -> bool:
    answer = _THINK.sub("", answer).strip()
    if isinstance(record.get("syllo"), dict):
        return check_answer(record["syllo"], answer)
    reference = str(record["messages"][-1].get("content", ""))
    return " ".join(answer.lower().split()) == " ".join(reference.lower().split())


# ------------------------------------------------------------------------------------------------ model
def _end_ids(tok) -> list[int]:
    ids = {tok.eos_token_id}
    for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tok.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid != tok.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


@torch.inference_mode()
def evaluate_model(model, tok, records: list[dict], *, batch_size: int = 32, max_new_tokens: int = 32) -> dict:
    """Exact match and token accuracy of ``model`` on ``records``; ``answers`` holds the first few generations.

    One forward pass per batch over each prompt (left-padded) followed by its reference completion gives the
    teacher-forced predictions, and its key/value cache cut back to the prompts is where greedy generation starts:
    the prompts are read once, not twice.
    """
    model.eval()
    prompts = [tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, tokenize=False)
               for r in records]
    fulls = [tok.apply_chat_template(r["messages"], tokenize=False) for r in records]
    order = sorted(range(len(records)), key=lambda i: len(prompts[i]))  # similar lengths pad little
    end_ids = _end_ids(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else end_ids[0]
    answers: list[str] = [""] * len(records)
    right: list[int] = [0] * len(records)  # per example, in the records' order (the gate pairs them)
    accuracy: list[float] = [0.0] * len(records)
    correct = 0
    tok_right = tok_total = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        p_ids, c_ids = [], []
        for i in idx:
            p_ids.append(tok(prompts[i], add_special_tokens=False)["input_ids"])
            tail = fulls[i][len(prompts[i]):] if fulls[i].startswith(prompts[i]) else (
                str(records[i]["messages"][-1]["content"]) + (tok.eos_token or ""))
            c_ids.append(tok(tail.rstrip("\n"), add_special_tokens=False)["input_ids"])
        # [pad... prompt | completion ...pad]: every prompt ends at column w, where generation continues.
        w, c = max(len(x) for x in p_ids), max(len(x) for x in c_ids)
        ids = torch.full((len(idx), w + c), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (pi, ci) in enumerate(zip(p_ids, c_ids)):
            ids[row, w - len(pi):w + len(ci)] = torch.tensor(pi + ci)
            mask[row, w - len(pi):w + len(ci)] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers left-padded rows
        dev = next(model.parameters()).device
        ids, mask, positions = ids.to(dev), mask.to(dev), positions.to(dev)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        pred = out.logits.argmax(-1)
        for row, ci in enumerate(c_ids):  # teacher-forced: the prediction at t is for token t + 1
            hits = int((pred[row, w - 1:w - 1 + len(ci)] == ids[row, w:w + len(ci)]).sum())
            accuracy[idx[row]] = hits / max(1, len(ci))
            tok_right += hits
            tok_total += len(ci)
        cache = out.past_key_values
        cache.crop(-(c + 1))  # keep the prompts but their last token, which generate feeds to start
        gen = model.generate(input_ids=ids[:, :w], attention_mask=mask[:, :w], **{_CACHE_KWARG: cache},
                             max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, eos_token_id=end_ids)
        for row, i in enumerate(idx):
            answers[i] = tok.decode(gen[row, w:], skip_special_tokens=True)
            right[i] = int(is_correct(records[i], answers[i]))
            correct += right[i]
    return {"correct": correct, "total": len(records), "exact_match": correct / max(1, len(records)),
            "token_accuracy": tok_right / max(1, tok_total), "answer_tokens": tok_total,
            "per_example": {"exact_match": right, "token_accuracy": accuracy},
            "samples": [{"reference": records[i]["messages"][-1]["content"], "answer": answers[i]}
                        for i in range(min(5, len(records)))]}


def _cache_kwarg() -> str:
    """``generate``'s name for a cache it continues: ``past_key_values`` in transformers 5.17, ``cache`` in 5.25."""
    from transformers.generation import utils

    return utils.ALL_CACHE_NAMES[0]


_CACHE_KWARG = _cache_kwarg()


def load_for_eval(base: Path, adapter: Path | None):
    """The base in fp32 with the adapter merged in (generation runs without LoRA's extra matmuls)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, local_files_only=True)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.config.use_cache = True
    return model


# ------------------------------------------------------------------------------------------------ home
def evaluate_home(home: Home, *, trigger: str = "cli", job_id: str | None = None, level: int | None = None) -> dict:
    """Evaluate the home's live adapter (or the base alone before any training) and record the result.

    ``level`` scores it on that level's generated held-out set instead of the configured one (``trainingd eval
    --level 1`` after the curriculum moved on: how the model does on what it learned first)."""
    set_threads()
    cfg = load_config(home.config)
    ref = resolve(cfg.base_model, home.root)
    base = fetch(ref)
    adapter = home.current_model if ckpt.has_adapter(home.current_model) else ref.adapter
    records, eval_set = load_eval_set(home, cfg, level)
    t0 = time.monotonic()
    tok = load_tokenizer(base)
    model = load_for_eval(base, adapter)
    loaded = time.monotonic()
    scores = evaluate_model(model, tok, records, batch_size=cfg.evaluation.batch_size,
                            max_new_tokens=cfg.evaluation.max_new_tokens)
    seconds = time.monotonic() - loaded
    state = read_adapter_state(home.current_model) if adapter == home.current_model else None
    result = {"kind": HISTORY_KIND, "trigger": trigger, "job_id": job_id, "finished_at": now_iso(),
              "exact_match": round(scores["exact_match"], 4), "token_accuracy": round(scores["token_accuracy"], 4),
              "correct": scores["correct"], "total": scores["total"], "level": eval_set["level"],
              "seconds": round(seconds, 2),
              "load_seconds": round(loaded - t0, 2), "base_model": cfg.base_model,
              "adapter": str(adapter) if adapter else None, "adapter_jobs": trained_count(state),
              **trained_so_far(home), "eval_set": eval_set, "samples": scores["samples"]}
    atomic_write_json(result_path(home), result)
    append_jsonl(home.history, {k: v for k, v in result.items() if k != "samples"})
    log.info("eval: exact match %d/%d (%.3f), token accuracy %.3f, %.1fs for %d examples",
             result["correct"], result["total"], result["exact_match"], result["token_accuracy"], seconds,
             result["total"])
    return result


def run_eval_command(home: Home, *, as_json: bool, level: int | None = None) -> int:
    """``trainingd eval``: evaluate the live adapter now and print the result."""
    logging.getLogger().setLevel(logging.INFO)
    try:
        result = evaluate_home(home, trigger="cli", level=level)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"trainingd eval: {e}", file=sys.stderr)
        return ec.CONFIG_ERROR
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        print(f"exact match {result['correct']}/{result['total']} = {result['exact_match']:.3f}, "
              f"token accuracy {result['token_accuracy']:.3f}, {result['seconds']:.1f}s "
              f"(adapter: {result['adapter'] or 'none, the base alone'}; eval set: {result['eval_set']['source']})")
    return ec.OK


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainingd.train.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--home", required=True)
    p.add_argument("--trigger", default="cli", choices=["cli", "after_job"])
    p.add_argument("--job-id")
    p.add_argument("--parent-pid", type=int, help="accepted for symmetry with the trainer; unused")
    p.add_argument("--json", action="store_true", help="with --trigger cli: print the result as JSON")
    p.add_argument("--level", type=int, choices=range(1, 6), metavar="1..5",
                   help="with --trigger cli: score on this level's generated held-out set")
    a = p.parse_args(argv)
    from trainingd.train.noise import quiet_third_party

    quiet_third_party()
    if a.trigger == "cli":  # trainingd eval: print the result, exit with the command line's codes
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run_eval_command(Home.at(a.home), as_json=a.json, level=a.level)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        evaluate_home(Home.at(a.home), trigger=a.trigger, job_id=a.job_id)
    except Exception:  # noqa: BLE001 - the daemon reads the exit code; the traceback goes to the log
        log.exception("evaluation failed")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
