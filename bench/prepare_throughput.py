"""Throughput and peak memory of preparing a 100,000-line chat file, against the ``datasets.map`` path TRL uses.

    .venv/bin/python bench/prepare_throughput.py [--lines 100000] [--seed 0]

Each measurement runs in a fresh subprocess and reports its own peak RSS (``getrusage(RUSAGE_SELF)``), so the
three figures do not share a high-water mark:

    (a) prepare_dataset, cold: validate + tokenize with per-message loss masks + write the Arrow cache
    (b) load_dataset("json") + map(apply_chat_template) as TRL's SFTTrainer does (one render per example,
        no loss mask), for reference
    (c) prepare_dataset again: a cache hit

The last line is ``ratio_vs_datasets_map=X`` (lines/s of (a) over lines/s of (b); above 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = ("the model learns to answer questions about data files and the queue quickly while a daemon trains "
         "one adapter from every file dropped into the inbox folder each step reports loss and tokens").split()


def generate(path: Path, lines: int, seed: int) -> None:
    """A seeded chat file with varied lengths: 1-3 turns, 3-120 words per message, some with a system prompt."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(int(rng.triangular(lo, hi, lo + (hi - lo) // 5))))

    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            msgs = [{"role": "system", "content": text(3, 20)}] if rng.random() < 0.3 else []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                msgs += [{"role": "user", "content": f"{text(3, 60)} {i}?"},
                         {"role": "assistant", "content": text(3, 120)}]
            f.write(json.dumps({"messages": msgs}) + "\n")


def worker(kind: str, data: Path, model: Path, cache: Path) -> dict:
    """One measurement, run inside its own process; returns seconds, rows and peak RSS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    t0 = time.perf_counter()
    if kind in ("prepare_cold", "prepare_cached"):
        from trainingd.config import Config
        from trainingd.train.data import prepare_dataset

        prepared = prepare_dataset(data, tokenizer, Config(max_length=1024), cache)
        rows, extra = len(prepared.train), {"cache_hit": prepared.report["cache_hit"],
                                            "tokens": prepared.report["tokens"]}
    else:
        from datasets import load_dataset

        ds = load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache / "hf"))

        def tokenize(example: dict) -> dict:
            return {"input_ids": tokenizer.apply_chat_template(example["messages"], tokenize=True,
                                                               return_dict=True)["input_ids"]}

        ds = ds.map(tokenize, remove_columns=ds.column_names)
        rows, extra = len(ds), {}
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"kind": kind, "seconds": seconds, "rows": rows, "peak_rss_mb": peak_mb, **extra}


def run_worker(kind: str, data: Path, model: Path, cache: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_DATASETS_CACHE=str(cache / "hf"), PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, __file__, "--worker", kind, "--data", str(data), "--model", str(model),
                          "--cache", str(cache)], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=["prepare_cold", "datasets_map", "prepare_cached"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker, a.data, a.model, a.cache)))
        return 0
    sys.path.insert(0, str(REPO))
    from trainingd.train.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="prepare-bench-") as tmp:
        tmp_path = Path(tmp)
        data = tmp_path / "chat.jsonl"
        generate(data, a.lines, a.seed)
        model = build_tiny_model(tmp_path / "tiny-qwen3")
        cache = tmp_path / "cache"
        results = [run_worker(kind, data, model, cache) for kind in ("prepare_cold", "datasets_map", "prepare_cached")]
    print(f"{a.lines} chat lines ({data.name}, seed {a.seed}), tiny-qwen3 tokenizer")
    print(f"{'path':<34}{'seconds':>9}{'lines/s':>11}{'peak RSS MB':>13}")
    names = {"prepare_cold": "(a) prepare_dataset, cold", "datasets_map": "(b) datasets load_json + map",
             "prepare_cached": "(c) prepare_dataset, cached"}
    for r in results:
        print(f"{names[r['kind']]:<34}{r['seconds']:>9.2f}{a.lines / r['seconds']:>11.0f}{r['peak_rss_mb']:>13.0f}")
    cold, ref = results[0], results[1]
    print(f"rows kept {cold['rows']}, tokens {cold['tokens']}, cache hit on rerun: {results[2]['cache_hit']}")
    print(f"ratio_vs_datasets_map={ref['seconds'] / cold['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
