#!/usr/bin/env python3
"""What one layer-activity report costs, against one optimizer step of the same model.

    .venv/bin/python bench/layer_stats_cost.py                 # SmolLM2-135M's shape, LoRA r=16 on all 7 projections
    .venv/bin/python bench/layer_stats_cost.py --tiny          # the embedded tiny model's shape
    .venv/bin/python bench/layer_stats_cost.py --device cuda

The model is built from a config with random weights (no download): SmolLM2-135M is a Llama of hidden 576,
30 layers, 9 heads, 3 KV heads, intermediate 1536. B is randomised so the norms are not trivially zero. A report
(``LayerStats.grads`` + ``LayerStats.report`` without writing the file) is timed against a forward+backward of
one batch (``--batch-size`` x ``--seq`` tokens), the cost it rides on every ``layer_stats_steps`` steps.
"""

from __future__ import annotations

import argparse
import time

import torch


def build(tiny: bool, r: int, device: str):
    import peft
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    if tiny:
        cfg = Qwen3Config(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16)
        model = Qwen3ForCausalLM(cfg)
    else:
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True)
        model = LlamaForCausalLM(cfg)
    lora = peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                  "gate_proj", "up_proj", "down_proj"])
    model = peft.get_peft_model(model, lora).to(device)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    return model, cfg.vocab_size


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    from trainingd.train.layer_stats import LayerStats

    model, vocab = build(a.tiny, a.r, a.device)
    ids = torch.randint(0, vocab, (a.batch_size, a.seq), device=a.device)
    stats = LayerStats(model, None, "bench")
    step_s, report_s = [], []
    for _ in range(a.repeat):
        model.zero_grad(set_to_none=True)
        sync(a.device)
        t0 = time.perf_counter()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        sync(a.device)
        t1 = time.perf_counter()
        stats.grads()
        doc = stats.report(step=1)
        sync(a.device)
        t2 = time.perf_counter()
        step_s.append(t1 - t0)
        report_s.append(t2 - t1)
    step, report = sorted(step_s)[len(step_s) // 2], sorted(report_s)[len(report_s) // 2]
    print(f"{'tiny' if a.tiny else 'SmolLM2-135M-shaped'} on {a.device}, LoRA r={a.r}: {len(doc['modules'])} modules")
    print(f"report {report * 1e3:.1f} ms (median of {a.repeat}); forward+backward of {a.batch_size}x{a.seq} tokens "
          f"{step * 1e3:.0f} ms; report/step = {report / step:.3f}")


if __name__ == "__main__":
    main()
