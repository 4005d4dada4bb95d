"""Merging a LoRA adapter into its base, and verifying the merge by its logits. Imports torch (the trainer side).

    python -m trainingd.train.merge BASE ADAPTER OUT [--report FILE]   # merge, save, verify; the report as JSON

Exit 0: merged and verified; 1: the check failed (the report says by how much); anything else: a crash.
Consolidation (``trainingd.lifecycle.consolidate``, which never imports torch) runs it this way.

The base is always loaded in fp32 (never the 4-bit copy a QLoRA run trains on: merging into a quantised base
would add its rounding error to the new base, and again at every later consolidation). The reference is the
same fp32 base with the adapter applied by peft; the merged model is saved, *reloaded from disk*, and its logits
on fixed prompts compared with the reference: the check covers what was written, not only what was in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from trainingd.atomic_ops import atomic_write_json

log = logging.getLogger(__name__)

# Fixed prompts: plain text and a chat turn, short enough for any base, long enough to touch many positions.
PROMPTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Question: what does the training queue do with a file dropped into the inbox?\nAnswer:",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "Once upon a time, in a small village by the sea, there lived",
)
# fp32 merge: W + s*B@A differs from W@x + s*B@(A@x) only by float rounding (about 1e-6 on logits).
TOLERANCE = {"max_abs_logit_diff": 1e-3, "mean_kl": 1e-6}


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True,
                                                 device_map="cpu")
    model.eval()
    return model


@torch.no_grad()
def prompt_logits(model, tokenizer, prompts=PROMPTS) -> list[torch.Tensor]:
    out = []
    for text in prompts:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        out.append(model(input_ids=ids, use_cache=False).logits[0].float())
    return out


def compare(reference: list[torch.Tensor], merged: list[torch.Tensor],
            tolerance: dict[str, float] = TOLERANCE) -> dict[str, Any]:
    """Max absolute logit difference and the mean/max per-token KL(reference || merged)."""
    max_abs, kls = 0.0, []
    for r, m in zip(reference, merged):
        max_abs = max(max_abs, float((r - m).abs().max()))
        lp, lq = torch.log_softmax(r, -1), torch.log_softmax(m, -1)
        kls.append((lp.exp() * (lp - lq)).sum(-1))
    kl = torch.cat(kls).clamp_min(0.0)  # float rounding can give -1e-9 where the two are equal
    report = {"prompts": len(reference), "tokens": int(kl.numel()), "max_abs_logit_diff": max_abs,
              "mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "tolerance": dict(tolerance)}
    report["ok"] = bool(max_abs <= tolerance["max_abs_logit_diff"] and report["mean_kl"] <= tolerance["mean_kl"])
    return report


def merge_adapter(base: Path, adapter: Path, out: Path, *, tolerance: dict[str, float] = TOLERANCE,
                  after_merge: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Write base + adapter merged (fp32, safetensors) and the base's tokenizer into ``out``; return the check.

    ``after_merge(model)`` runs on the merged model before it is saved (a test changes a weight there to see the
    check fail). The caller removes ``out`` when ``report["ok"]`` is False.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    model = PeftModel.from_pretrained(_load(base), str(adapter))
    model.eval()
    reference = prompt_logits(model, tokenizer)
    merged = model.merge_and_unload(safe_merge=True)  # safe_merge: refuses NaN weights instead of writing them
    if after_merge is not None:
        after_merge(merged)
    merged.config.use_cache = True  # a consolidated base is for inference and further training alike
    Path(out).mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    del merged, model
    report = compare(reference, prompt_logits(_load(Path(out)), tokenizer), tolerance)
    log.info("merge check: max |logit diff| %.3g, mean KL %.3g over %d tokens (%s)", report["max_abs_logit_diff"],
             report["mean_kl"], report["tokens"], "ok" if report["ok"] else "FAILED")
    return report


def main(argv: list[str] | None = None, *, after_merge: Callable[[Any], None] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainingd.train.merge",
                                description="Merge a LoRA adapter into its base (fp32) and verify the logits.")
    p.add_argument("base", type=Path)
    p.add_argument("adapter", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--report", type=Path, help="also write the report (JSON) to this file, atomically")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = merge_adapter(a.base, a.adapter, a.out, after_merge=after_merge)
    if a.report is not None:
        atomic_write_json(a.report, report)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
