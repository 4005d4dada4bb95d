"""Peak memory of a configured run, estimated before any device time is spent (stdlib only: no torch).

    trainingd plan [--home DIR] [--json]

What it counts, per training process (each DDP process holds everything below; FSDP shares the weights):

* **weights** at their precision: from the base's safetensors headers (names and shapes, no weight is read); with
  ``use_qlora`` the linear layers of the blocks at 4-bit NF4 with double-quantised scales (~4.13 bits per
  weight), everything else at the compute dtype; on GPUs with ``strategy: fsdp`` over N processes, 1/N of them
  plus what is gathered while a step runs (the embeddings, head and final norm, and two blocks), with the LoRA
  states also split N ways (on the CPU, counted whole: the first process holds the base while it hands out shards);
* **LoRA**: ``r x (in + out)`` per targeted module, fp32 weights + gradients + two AdamW moments (16 bytes each);
* **activations** for one forward pass (``micro_batch_size x max_length`` tokens): per block what autograd keeps
  for the backward of a Llama/Qwen-style layer with sdpa attention (``8h + 2kv + 4i`` values per token, plus
  ``2h`` with Qwen3's q/k norms; on the CPU also the attention weights, heads x length), or only the block input
  with gradient checkpointing plus one block recomputed; twice a block's worth for the gradients of a block in its
  backward; the logits at trained positions (fp32, with the log-softmax and both gradients) for every token as an
  upper bound;
* **runtime**: what the process holds before the model (CPU: the Python, torch and transformers libraries;
  GPU: the CUDA context and allocator reserve).

``bench/memory_plan.py`` measures the real peak for a few sizes and prints estimate / measured.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainingd.config import Config

GiB = 1 << 30
MiB = 1 << 20
# Resident memory of a trainer process before the model is loaded (python, torch, transformers, peft, datasets and
# accelerate imported; tokenizer and the Arrow cache open), measured on the reference CPU: bench/memory_plan.py.
CPU_RUNTIME_BYTES = 600 * MiB
# CUDA context, cuBLAS workspace and the caching allocator's slack, on a recent NVIDIA GPU.
GPU_RUNTIME_BYTES = 900 * MiB
NF4_BYTES_PER_WEIGHT = 4.127 / 8


@dataclass
class ModelShape:
    params: dict[str, list[int]]
    """Tensor name -> shape, from the safetensors headers."""
    hidden: int
    intermediate: int
    layers: int
    kv_dim: int
    vocab: int
    qk_norm: bool
    heads: int


def read_shapes(model_dir: Path) -> dict[str, list[int]]:
    """Every tensor's shape from the safetensors headers (8-byte length + JSON): no weight is read."""
    shapes: dict[str, list[int]] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        shapes.update({k: v["shape"] for k, v in header.items() if k != "__metadata__"})
    return shapes


def model_shape(model_dir: Path) -> ModelShape:
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    hidden = int(cfg["hidden_size"])
    heads = int(cfg.get("num_attention_heads") or 1)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    kv = int(cfg.get("num_key_value_heads") or heads) * head_dim
    shapes = read_shapes(model_dir)
    return ModelShape(params=shapes, hidden=hidden, intermediate=int(cfg.get("intermediate_size") or 4 * hidden),
                      layers=int(cfg["num_hidden_layers"]), kv_dim=kv, vocab=int(cfg["vocab_size"]),
                      qk_norm=any(".q_norm." in k for k in shapes), heads=heads)


_LAYER_ID = re.compile(r"\.layers\.(\d+)\.")


def _is_block_linear(name: str, shape: list[int]) -> bool:
    return ".layers." in name and name.endswith(".weight") and len(shape) == 2


def _targets(cfg: Config, shapes: dict[str, list[int]]) -> list[list[int]]:
    wanted = cfg.lora.target_modules
    out = []
    for name, shape in shapes.items():
        if not _is_block_linear(name, shape):
            continue
        module = name[:-len(".weight")].rsplit(".", 1)[-1]
        if wanted == "all-linear" or module in wanted:
            out.append(shape)
    return out


def estimate(cfg: Config, model_dir: Path, *, device: str, bf16: bool, micro_batch: int | None = None,
             max_length: int | None = None, gradient_checkpointing: bool | None = None,
             processes_per_device: int = 1) -> dict[str, Any]:
    """Bytes per training process: weights, lora (+ grads and optimizer), activations, runtime, total."""
    m = model_shape(model_dir)
    micro = micro_batch or cfg.micro_batch_size or cfg.batch_size
    length = max_length or cfg.max_length or 2048
    ckpt = cfg.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    compute = 2 if (bf16 and device == "cuda") else 4
    weights = 0.0
    per_layer: dict[str, float] = {}
    for name, shape in m.params.items():
        size = math.prod(shape) * (NF4_BYTES_PER_WEIGHT if cfg.use_qlora and _is_block_linear(name, shape)
                                   else compute)
        weights += size
        layer_id = _LAYER_ID.search(name)
        if layer_id:
            per_layer[layer_id.group(1)] = per_layer.get(layer_id.group(1), 0.0) + size
    lora_params = sum(cfg.lora.r * (shape[0] + shape[1]) for shape in _targets(cfg, m.params))
    lora = lora_params * 16
    shards = cfg.distributed.num_processes if cfg.distributed.strategy == "fsdp" else 1
    if shards > 1 and device == "cuda":
        # FSDP2: 1/N of every weight and LoRA state, plus what is gathered while it runs: the root's weights
        # (embeddings, head, final norm) and up to two blocks (the running one and the one prefetched). The
        # first process reads the whole base into host memory before sharding; that is not the device's.
        root = weights - sum(per_layer.values())
        gathered = root + 2 * max(per_layer.values(), default=0.0)
        weights = weights / shards + gathered * (shards - 1) / shards
        lora /= shards
    tokens = micro * length
    act_dtype = 2 if (bf16 and device == "cuda") else 4
    per_token_layer = (8 * m.hidden + 2 * m.kv_dim + 4 * m.intermediate + (2 * m.hidden if m.qk_norm else 0)
                       + 7 * cfg.lora.r) * act_dtype
    if device != "cuda":
        # sdpa on the CPU keeps the attention weights for its backward (heads x length per token); the GPU's
        # flash / memory-efficient kernels keep only a log-sum-exp per row
        per_token_layer += m.heads * length * act_dtype
    layer = per_token_layer * tokens
    if ckpt:
        blocks = m.hidden * act_dtype * tokens * m.layers + layer  # block inputs + the block being recomputed
    else:
        blocks = layer * m.layers
    # logits at trained positions in fp32: the logits, their log-softmax and the two gradients, and the gathered
    # hidden states (every token counted: an upper bound for completion-only training)
    logits = tokens * m.vocab * 4 * 5
    # backward of a block: the gradients of its saved values exist beside them (about twice a block's worth)
    activations = blocks + logits + 2 * layer
    runtime = GPU_RUNTIME_BYTES if device == "cuda" else CPU_RUNTIME_BYTES
    total = weights + lora + activations + runtime
    return {"weights": int(weights), "lora_and_optimizer": int(lora), "lora_params": lora_params,
            "activations": int(activations), "runtime": runtime, "total": int(total),
            "micro_batch": micro, "max_length": length, "gradient_checkpointing": ckpt,
            "total_per_device": int(total * processes_per_device)}


def visible_devices() -> list[dict[str, Any]]:
    """GPUs from nvidia-smi (name, total bytes), else the CPU with the machine's memory."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,"
                                  "nounits"], capture_output=True, text=True, timeout=20, check=True).stdout
            gpus = [{"device": f"cuda:{i.strip()}", "name": n.strip(), "bytes": int(float(mem)) * MiB}
                    for i, n, mem in (line.split(",") for line in out.strip().splitlines() if line.count(",") == 2)]
            if gpus:
                return gpus
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
    except OSError:
        pass
    return [{"device": "cpu", "name": "CPU", "bytes": total}]


def plan(cfg: Config, model_dir: Path) -> dict[str, Any]:
    """The estimate for each visible device, whether it fits, and what to change if it does not."""
    devices = visible_devices()
    gpu = devices[0]["device"].startswith("cuda")
    n = cfg.distributed.num_processes
    per_device = max(1, math.ceil(n / len(devices))) if gpu else n
    bf16 = gpu and cfg.distributed.mixed_precision != "no"
    kind = "cuda" if gpu else "cpu"
    est = estimate(cfg, model_dir, device=kind, bf16=bf16, processes_per_device=per_device)
    alt = {"gradient_checkpointing": estimate(cfg, model_dir, device=kind, bf16=bf16, gradient_checkpointing=True,
                                              processes_per_device=per_device)["total_per_device"]}
    micro = est["micro_batch"]
    if micro > 1:
        alt[f"micro_batch_size {max(1, micro // 2)}"] = estimate(
            cfg, model_dir, device=kind, bf16=bf16, micro_batch=max(1, micro // 2),
            processes_per_device=per_device)["total_per_device"]
    rows = []
    for d in devices:
        fits = d["bytes"] == 0 or est["total_per_device"] <= 0.9 * d["bytes"]  # 10% for what is not counted
        advice = []
        if not fits:
            if not est["gradient_checkpointing"]:
                advice.append("set gradient_checkpointing: true")
            if micro > 1:
                advice.append(f"lower micro_batch_size (to {max(1, micro // 2)})")
            if not cfg.use_qlora:
                advice.append("set use_qlora: true")
                if gpu and len(devices) > 1 and cfg.distributed.strategy != "fsdp":
                    advice.append(f"or shard the 16-bit model: distributed.strategy fsdp, num_processes {len(devices)}")
            advice.append("lower max_length")
        rows.append({**d, "needs": est["total_per_device"], "fits": fits, "advice": advice})
    return {"model": str(model_dir), "processes": n, "processes_per_device": per_device, "bf16": bf16,
            "estimate": est, "alternatives": alt, "devices": rows}


def format_plan(p: dict[str, Any]) -> str:
    e = p["estimate"]

    def gb(x: float) -> str:
        return f"{x / GiB:.2f} GiB" if x >= GiB / 4 else f"{x / MiB:.0f} MiB"

    lines = [f"model {p['model']}: {p['processes']} process(es), {p['processes_per_device']} per device, "
             f"{'bf16' if p['bf16'] else 'fp32'}",
             f"micro-batch {e['micro_batch']} x {e['max_length']} tokens, gradient checkpointing "
             f"{'on' if e['gradient_checkpointing'] else 'off'}",
             f"  weights             {gb(e['weights'])}",
             f"  LoRA + grad + AdamW {gb(e['lora_and_optimizer'])} ({e['lora_params']:,} parameters)",
             f"  activations         {gb(e['activations'])}",
             f"  runtime             {gb(e['runtime'])}",
             f"  per process         {gb(e['total'])}"]
    lines += [f"  with {k}: {gb(v)} per device" for k, v in p["alternatives"].items()]
    for d in p["devices"]:
        verdict = "fits" if d["fits"] else "does NOT fit: " + "; ".join(d["advice"])
        lines.append(f"{d['device']} ({d['name']}, {gb(d['bytes'])}): needs {gb(d['needs'])}: {verdict}")
    return "\n".join(lines)
