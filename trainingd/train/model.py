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


def cpu_has_native_bf16() -> bool:
    """True when this CPU has AVX512-BF16 or AMX-BF16 instructions (bf16 matmuls at full speed)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(requested: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for autocast.

    ``auto``: bf16 on GPUs that support it; fp32 on CPU. On the reference CPU (avx512_bf16, where a
    plain bf16 matmul is ~2x fp32) bf16 autocast trained the benchmark model (hidden 256, 4 layers,
    LoRA r=16) about 4x *slower* than fp32 with the same loss (``bench/train_throughput.py
    --precisions fp32,bf16``): autocast re-casts every frozen weight and activation each step and
    small matmuls do not win it back. So the CPU default stays fp32; bf16 is an explicit choice
    (``TRAININGD_PRECISION=bf16`` in daemon mode, ``--precision bf16`` standalone).
    """
    requested = (requested or "auto").lower()
    if requested in ("bf16", "fp32"):
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "fp32"


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
        # Frozen weights in bf16 on bf16 GPUs halve memory; LoRA weights are upcast to fp32 below.
        kwargs["dtype"] = torch.bfloat16 if (precision == "bf16" and device.type == "cuda") else torch.float32
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
    # Trainable weights stay fp32 (optimizer precision); autocast handles compute dtype.
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
