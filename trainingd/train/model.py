"""Loading the base model (full precision or 4-bit QLoRA), the tokenizer, and the LoRA adapter.

The base is loaded from a local folder only (``trainingd.models.base_model.fetch`` builds or downloads it first).
The adapter is either a new LoRA from the config (seeded, so the same seed gives the same initial adapter)
or an existing adapter folder (``current_model/`` or a checkpoint) loaded trainable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from trainingd.config import Config

log = logging.getLogger(__name__)


# bf16 is chosen on a CPU when its matmul runs at least this much faster than fp32: the LoRA weights, their
# gradients and AdamW stay fp32, so only the frozen base's share of the work speeds up.
BF16_MIN_SPEEDUP = 1.5
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AVX512-BF16 or AMX-BF16 instructions (bf16 matmuls at full speed)."""
    from trainingd.contracts.precision_probe import cpu_info

    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def matmul_gflops(dtype: torch.dtype, n: int = 1024, reps: int = 5, device: str = "cpu") -> float:
    """GFLOP/s of an ``n``-cubed matmul in ``dtype`` on ``device`` (best of ``reps`` after one warm-up)."""
    import time

    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def cpu_probe(cache_dir: Path | None, n: int = 1024) -> dict:
    """This machine's fp32 and bf16 matmul rates: from ``cache_dir``'s probe file, else measured and written there.

    A machine is its host, CPU model and flags, torch version and thread count
    (``trainingd.contracts.precision_probe``); the probe costs about a second once per home and machine."""
    from trainingd.contracts import precision_probe

    key = precision_probe.machine_key(torch.__version__, torch.get_num_threads())
    cached = precision_probe.read_probe(cache_dir, key)
    if cached is not None:
        return {**cached, "cached": True}
    fp32, bf16 = matmul_gflops(torch.float32, n), matmul_gflops(torch.bfloat16, n)
    if cache_dir is not None:
        try:
            precision_probe.write_probe(cache_dir, key, fp32, bf16, n)
        except OSError as e:  # a read-only cache costs a probe per run, nothing else
            log.warning("cannot keep the precision probe in %s: %s", cache_dir, e)
    return {"fp32_gflops": fp32, "bf16_gflops": bf16, "n": n, "cached": False}


def choose_precision(requested: str, device: torch.device, cache_dir: Path | None = None) -> str:
    """``"bf16"`` or ``"fp32"``: the dtype the frozen base is stored in (LoRA weights and AdamW are fp32 always).

    ``auto``: bf16 on GPUs that support it; on a CPU, bf16 when its matmul probe (:func:`cpu_probe`, cached per
    home and machine) runs bf16 at least ``BF16_MIN_SPEEDUP`` x fp32 (CPUs with AVX512-BF16 or AMX: ~2.7x on an
    AMD EPYC with avx512_bf16), else fp32 (a CPU without them emulates bf16, 0.2x here). On a CPU the base is
    *stored* in bf16 and nothing is autocast: bf16 autocast re-cast every frozen weight each step and trained
    ~4x slower than fp32 even where bf16 matmuls are fast.
    """
    requested = (requested or "auto").lower()
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":
        return "fp32"
    probe = cpu_probe(cache_dir)
    ratio = probe["bf16_gflops"] / probe["fp32_gflops"]
    choice = "bf16" if ratio >= BF16_MIN_SPEEDUP else "fp32"
    log.info("precision auto -> %s: matmul probe fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s (%.2fx, bf16 from %.1fx)%s",
             choice, probe["fp32_gflops"], probe["bf16_gflops"], ratio, BF16_MIN_SPEEDUP,
             " (cached)" if probe.get("cached") else "")
    return choice


def uses_autocast(precision: str, device: torch.device) -> bool:
    """Only on a GPU: there bf16 autocast of the fp32 LoRA weights is cheap; on a CPU the base is stored in bf16."""
    return precision == "bf16" and device.type == "cuda"


def load_tokenizer(base: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
    if tok.pad_token_id is None:
        # Right padding never reaches the loss (labels are -100 there); any id will do.
        tok.pad_token = tok.eos_token
    return tok


def attention_kernel(requested: str, device: torch.device) -> str:
    """The attention implementation to load: flash-attention only where it can run (its package and a GPU)."""
    import importlib.util

    if requested == "flash_attention_2":
        if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
            return requested
        log.info("attn_implementation flash_attention_2 needs a GPU and the flash-attn package: using sdpa")
        return "sdpa"
    return requested or "sdpa"


def set_determinism(device: torch.device) -> None:
    """CUDA settings under which the same steps give the same adapter (exact resume on a GPU).

    cuBLAS needs a fixed workspace to reduce in a fixed order (set before its first use), cuDNN must not pick
    kernels by timing, TF32 would round differently from fp32; kernels without a deterministic version only warn.
    What holds then: a run stopped and resumed with the same world size, GPU model and library versions ends
    with the adapter of the uninterrupted run; different world sizes agree to rounding, not bit for bit.
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def load_model(base: Path, cfg: Config, *, init_adapter: Path | None, device: torch.device, precision: str,
               place: bool = True, skeleton: bool = False):
    """Return a trainable PEFT model on ``device`` with only the LoRA weights requiring grad.

    ``place=False`` leaves an unquantized model in host memory for FSDP, which moves each shard to the device
    (a model too big for one device is never whole on it). ``skeleton=True`` builds the same model on the meta
    device, reading no weight: FSDP's other processes, whose shards the main process's copy fills."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict = {"attn_implementation": attention_kernel(getattr(cfg, "attn_implementation", "sdpa"), device),
                    "local_files_only": True}
    if cfg.use_qlora:
        compute = torch.bfloat16 if precision == "bf16" else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else "cpu"
        # bitsandbytes keeps non-quantized parts in this dtype; fp32 keeps the CPU path exact
        kwargs["dtype"] = compute
    else:
        # The frozen base stored in bf16 halves its memory and runs bf16 matmuls (GPUs, and CPUs with native
        # bf16); LoRA weights are upcast to fp32 below, so their gradients and AdamW's state are fp32.
        kwargs["dtype"] = torch.bfloat16 if precision == "bf16" else torch.float32
    if skeleton:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(base), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=kwargs["dtype"],
                                                     attn_implementation=kwargs["attn_implementation"])
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base), **kwargs)
    model.config.use_cache = False
    if cfg.use_qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()

    torch.manual_seed(cfg.seed)  # the new LoRA's initialisation is part of exact reproducibility
    if init_adapter is not None:
        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    else:
        lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                          target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    # Trainable weights stay fp32 (optimizer precision); peft casts their input and output around them.
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if not cfg.use_qlora and place and not skeleton:
        model.to(device)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("model %s: %s (%s), %d trainable / %d parameters, qlora=%s",
             "built on the meta device (weights to come)" if skeleton else "loaded", base, precision, n_train, n_all,
             cfg.use_qlora)
    return model


def loss_parts(model):
    """The decoder and the output head of a PEFT causal LM, for computing logits only where needed.

    Returns ``(decoder, head, ok)``; ``ok`` is False for models whose head needs more than a linear
    layer (e.g. logit soft-capping), where the caller falls back to the full forward.
    """
    causal = model.get_base_model()
    if getattr(causal.config, "final_logit_softcapping", None):
        return None, None, False
    decoder = getattr(causal, "base_model", None)
    head = causal.get_output_embeddings()
    if decoder is None or decoder is causal or head is None:
        return None, None, False
    return decoder, head, True


def token_loss_sum(model, parts, batch: dict, autocast) -> torch.Tensor:
    """Summed cross-entropy over the trained positions of one micro-batch (labels != -100).

    The lm_head runs only at trained positions (``parts`` from :func:`loss_parts`): on long prompts most of the
    vocabulary projection is saved.
    """
    import torch.nn.functional as F

    input_ids, labels = batch["input_ids"], batch["labels"]
    target = labels[:, 1:]
    mask = target != -100
    decoder, head, ok = parts
    with autocast():
        if ok:
            hidden = decoder(input_ids=input_ids, position_ids=batch.get("position_ids"), use_cache=False)[0]
            logits = head(hidden[:, :-1][mask])
        else:
            out = model(input_ids=input_ids, position_ids=batch.get("position_ids"), use_cache=False)
            logits = out.logits[:, :-1][mask]
    return F.cross_entropy(logits.float(), target[mask], reduction="sum")


class TokenLoss(torch.nn.Module):
    """The module the recipe prepares with ``accelerate`` (DDP/FSDP wrap *this*): its forward is the summed token
    loss, so the lm_head-only-where-trained path runs inside the wrapper's forward and gradients are synced."""

    def __init__(self, model, autocast):
        super().__init__()
        self.model = model
        self._parts = loss_parts(model)  # plain tuple: the modules are registered under self.model already
        self._autocast = autocast

    def forward(self, input_ids, labels, position_ids=None):
        return token_loss_sum(self.model, self._parts, {"input_ids": input_ids, "labels": labels,
                                                        "position_ids": position_ids}, self._autocast)


def set_threads() -> None:
    """Use every core this process may run on unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        try:
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
        except AttributeError:
            pass
