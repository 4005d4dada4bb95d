#!/usr/bin/env python3
"""QLoRA training check on a Qwen3-0.6B-shaped model built from a config (no download): tokens/s, memory, MFU.

    bench/gpu_check.sh                    # on a GPU box: 28 layers x 1024 hidden, 60 optimizer steps per config
    bench/gpu_check.sh --tiny             # anywhere (CPU too): a 2-layer model, a few steps, same code path
    bench/gpu_check.sh --steps 100 --max-length 512 --batch-size 8

It prints one table: tokens/s, loss, peak GPU memory (``max_memory_reserved``) and the memory plan's estimate
(``trainingd.checks.memory_plan``, without the CUDA context) for the old default (``batch_size`` examples per forward),
a token budget (``micro_batch_tokens``) with 4x the examples per step, packing, and flash-attention 2 when the
flash-attn package is installed.

The model has Qwen3-0.6B's shape (hidden 1024, 28 layers, 16 heads, 8 KV heads, head_dim 128, intermediate 3072)
with a 32k vocabulary over the locally built tokenizer, random weights saved in bf16. The data are synthetic chat
examples of spread lengths. Training goes through trainingd's own recipe (``trainingd.train.recipe.run``) with
``use_qlora`` (4-bit NF4 base, bf16 compute on GPUs that support it), so this checks the real path.

MFU counts 6 x parameters x tokens/s (the usual full-training count; LoRA-aware: 4 x frozen + 6 x LoRA is also
printed) against the GPU's dense bf16 peak (``--peak-tflops``, default 989 for H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDS = ("the a model data train loss step batch token adapter layer weight gradient learning rate question answer "
         "user assistant explain why how what when where which number file folder queue daemon status pause "
         "resume checkpoint python code function return value error line json example format fast slow").split()


def build_model(out: Path, tiny: bool) -> tuple[Path, int]:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from trainingd.train.tiny_model import build_tokenizer

    tok = build_tokenizer(2048)
    shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 intermediate_size=192, vocab_size=len(tok)) if tiny else \
        dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
             intermediate_size=3072, vocab_size=32768)
    config = Qwen3Config(**shape, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1_000_000,
                         eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(config)
    model = model.to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out, n


def write_data(path: Path, n: int, max_words: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            nq = rng.randint(4, max(5, max_words // 6))
            na = rng.randint(8, max(9, max_words))
            q = " ".join(rng.choice(WORDS) for _ in range(nq))
            a = " ".join(rng.choice(WORDS) for _ in range(na))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"{q} {i}?"},
                                             {"role": "assistant", "content": a}]}) + "\n")
    return path


def lora_params(r: int, tiny: bool) -> int:
    """r x (in + out) per targeted linear; 7 linears per block (the full-size shape only)."""
    if tiny:
        return 0
    h, kv, inter, L = 1024, 8 * 128, 3072, 28
    per_block = (h + 16 * 128) + (h + kv) * 2 + (16 * 128 + h) + (h + inter) * 2 + (inter + h)
    return r * per_block * L


def run_config(model: Path, work: Path, name: str, settings: dict, a: argparse.Namespace, steps: int,
               max_length: int) -> dict:
    """Train ``steps`` optimizer steps with ``settings`` over the common ones; tokens/s, peak memory, plan."""
    import torch

    from trainingd.config import parse_config
    from trainingd.checks.memory_plan import estimate
    from trainingd.train.recipe import RunSpec, run

    cuda = torch.cuda.is_available()
    batch = settings.get("batch_size", a.batch_size)
    data = write_data(work / f"data-{name}.jsonl", steps * batch, max_words=max_length // 2)
    cfg = parse_config({"base_model": str(model), "use_qlora": not a.no_qlora, "max_length": max_length,
                        "batch_size": batch, "gradient_accumulation": 1, "learning_rate": 2e-4,
                        "save_steps": 10**6, "truncation": "truncate", "layer_stats_steps": 0,
                        "lora": {"r": a.lora_r, "alpha": 2 * a.lora_r}, **settings})
    spec = RunSpec(dataset=data, base_model=model, output_dir=work / f"out-{name}", checkpoint_dir=work / f"ck-{name}",
                   cfg=cfg, job_id=f"gpu-check-{name}", metrics_path=work / f"metrics-{name}.jsonl",
                   cache_dir=work / "cache")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result = run(spec)
    if result.exit_code != 0:
        return {"config": name, "error": result.reason}
    s = result.summary
    plan = estimate(cfg, model, device="cuda" if cuda else "cpu", bf16=s.get("precision") == "bf16",
                    micro_batch=s.get("micro_batch_size") or batch)
    peak = torch.cuda.max_memory_reserved() if cuda else None
    return {"config": name, "steps": s["steps"], "tokens_per_s": s["tokens"] / s["seconds_training"],
            "loss": s["loss"], "peak_gib": peak / 2**30 if peak else None,
            # the plan counts the CUDA context, which max_memory_reserved does not
            "plan_gib": (plan["total"] - (plan["runtime"] if cuda else 0)) / 2**30, "precision": s.get("precision")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model and a few steps (runs on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per config (default 60, 4 with --tiny)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU, for MFU")
    ap.add_argument("--no-qlora", action="store_true", help="bf16 base + LoRA instead of 4-bit")
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    steps = a.steps or (4 if a.tiny else 60)
    max_length = min(a.max_length, 128) if a.tiny else a.max_length
    # The GPU defaults against the old ones: examples per micro-batch (batch_size) vs a token budget with 4x the
    # examples per step, and flash-attention where it is installed.
    budget = a.batch_size * max_length
    configs = [("sdpa, batch", {}),
               ("sdpa, 4x batch, token budget", {"batch_size": 4 * a.batch_size, "micro_batch_tokens": budget}),
               ("sdpa, packing", {"packing": True})]
    if cuda and importlib.util.find_spec("flash_attn") is not None:
        configs.append(("flash_attention_2, batch", {"attn_implementation": "flash_attention_2"}))
    with tempfile.TemporaryDirectory(prefix="trainingd-gpu-check-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model, n_params = build_model(work / "model", a.tiny)
        built_s = time.perf_counter() - t0
        gpu = torch.cuda.get_device_name() if cuda else "none (CPU)"
        print(f"device {gpu}; model {'tiny' if a.tiny else 'Qwen3-0.6B shape'} {n_params / 1e6:.0f}M params "
              f"(built in {built_s:.1f} s), {'QLoRA nf4' if not a.no_qlora else 'LoRA'} r={a.lora_r}; "
              f"{steps} steps per config, max_length {max_length}", flush=True)
        rows = [run_config(model, work, f"c{i}", settings, a, steps, max_length) | {"name": name}
                for i, (name, settings) in enumerate(configs)]
    n_lora = lora_params(a.lora_r, a.tiny)
    print(f"\n{'config':32s} {'tok/s':>9s} {'loss':>7s} {'peak GiB':>9s} {'plan GiB':>9s} {'MFU 6N':>7s} "
          f"{'MFU LoRA':>9s}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:32s} failed: {r['error']}")
            continue
        tps = r["tokens_per_s"]
        mfu6 = f"{6 * n_params * tps / (a.peak_tflops * 1e12):.1%}" if cuda else "-"
        mfu_l = f"{(4 * n_params + 6 * n_lora) * tps / (a.peak_tflops * 1e12):.1%}" if cuda else "-"
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(f"{r['name']:32s} {tps:9,.0f} {r['loss']:7.4f} {peak:>9s} {r['plan_gib']:9.2f} {mfu6:>7s} {mfu_l:>9s}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
