"""Trainer entry points: daemon mode (one job of a home) and standalone (``train.py``).

Daemon mode -- what the daemon runs per job (cwd = home, output to logs/training_output.log)::

    python -m trainingd.train --home H --job-id ID --dataset PATH --reason-file PATH [--parent-pid PID]

Standalone -- train an adapter from one file, as users run it::

    python3 train.py --dataset FILE --model PATH --output-dir DIR --epochs N [--use-qlora] [--resume]

The exit code is one of ``trainingd.exit_codes`` (OK, CRASH, CONFIG_ERROR, DATA_ERROR, STOPPED, SKIPPED,
CHECKPOINT_MISMATCH); both also write ``{"exit", "reason", "details", "summary"}`` into a result file
(``trainingd.contracts.result``): the ``--reason-file`` in daemon mode, ``<output-dir>/result.json`` standalone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from trainingd import exit_codes
from trainingd.models.base_model import resolve
from trainingd.train.build_base import fetch
from trainingd.config import Config, ConfigError, load_config, normalize_locked, parse_config, resolve_base_model
from trainingd.contracts import layer_activity
from trainingd.contracts.adapter_state import read_adapter_state
from trainingd.contracts.result import RunResult, read_result, result_path, write_result
from trainingd.contracts.trainer_command import read_trainer_command
from trainingd.paths import Home
from trainingd.train import checkpoint as ckpt

log = logging.getLogger("trainingd.train")


def _die_with_parent(parent_pid: int) -> None:
    """Linux: a SIGTERM the moment the daemon dies, even while still loading (the stop handler records it and the
    loop stops with a checkpoint at the next step boundary). The loop's parent-pid check covers other systems."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    # Under a launcher the parent is torchrun / accelerate (it dies with the daemon's process group); the loop's
    # check looks for the daemon among the ancestors.
    launched = os.environ.get("TRAININGD_LAUNCHER") == "1"
    if not launched and os.getppid() != parent_pid:  # the daemon died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _setup_logging() -> None:
    from trainingd.train.noise import quiet_third_party

    quiet_third_party()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _fail(code: int, reason: str, reason_file: Path | None) -> int:
    print(f"trainingd.train: {exit_codes.name_of(code)}: {reason}", file=sys.stderr)
    if reason_file is not None:
        write_result(reason_file, RunResult(code, reason=reason))
    return code


# ---------------------------------------------------------------------------------------------- daemon
def daemon_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainingd.train", description="Train one queued job of a home.")
    p.add_argument("--home", type=Path, required=True, help="the daemon's home folder")
    p.add_argument("--job-id", required=True, help="job id (names the checkpoint folder)")
    p.add_argument("--dataset", type=Path, required=True, help="the job's JSONL file")
    p.add_argument("--reason-file", type=Path, required=True, help="where the result JSON is written")
    p.add_argument("--parent-pid", type=int, default=None, help="exit (with a checkpoint) when this parent dies")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   default=os.environ.get("TRAININGD_PRECISION", "auto"),
                   help="the frozen base's dtype (default: the config's precision)")
    a = p.parse_args(argv)
    _setup_logging()
    from trainingd.train.recipe import RunSpec, StopSignal, execute

    stop = StopSignal().install()  # before the slow imports: a SIGTERM during load is recorded, not fatal
    if a.parent_pid is not None:
        _die_with_parent(a.parent_pid)
    home = Home.at(a.home)
    order = read_trainer_command(home)
    try:
        if order is not None and order.job_id == a.job_id and order.config is not None:
            cfg = parse_config(order.config)  # what the daemon holds (see trainingd.contracts.trainer_command)
        else:
            cfg = load_config(home.config)
        ref = resolve_base_model(cfg, home.root)
        base = fetch(ref)  # builds an embedded base, or downloads a hub id, once
    except ConfigError as e:
        return _fail(exit_codes.CONFIG_ERROR, str(e), a.reason_file)
    _load_only_what_the_run_needs(cfg)
    from trainingd.train.commands import TrainerCommandReader

    reader = TrainerCommandReader(home, a.job_id)
    spec = RunSpec(
        dataset=a.dataset.resolve(), base_model=base, output_dir=home.current_model,
        checkpoint_dir=home.job_checkpoints(a.job_id), cfg=cfg, job_id=a.job_id,
        # The home's adapter keeps growing; a base_model naming an adapter folder only seeds the first one.
        init_adapter=home.current_model if ckpt.has_adapter(home.current_model) else ref.adapter,
        progress_path=home.trainer_progress, metrics_path=home.metrics,
        layer_activity_path=home.layer_activity, tensorboard_dir=home.tensorboard / a.job_id, commands=reader.action,
        resume=True,
        parent_pid=a.parent_pid, cache_dir=home.cache, precision=_precision(a.precision, cfg), stop_signal=stop,
        skip_if_trained=True, home=home.root)
    return execute(spec, a.reason_file)


def _load_only_what_the_run_needs(cfg: Config) -> None:
    """A run without QLoRA never imports bitsandbytes (see ``trainingd.train.noise.without_bitsandbytes``)."""
    if not cfg.use_qlora:
        from trainingd.train.noise import without_bitsandbytes

        without_bitsandbytes()


def _precision(requested: str, cfg: Config) -> str:
    """``--precision``/``TRAININGD_PRECISION`` when set, else the config's ``precision``, else
    ``distributed.mixed_precision`` (no -> fp32); ``auto`` leaves the choice to the machine."""
    if requested != "auto":
        return requested
    if cfg.precision != "auto":
        return cfg.precision
    return {"no": "fp32", "bf16": "bf16"}.get(cfg.distributed.mixed_precision, "auto")


# ------------------------------------------------------------------------------------------ standalone
# Config keys a standalone run may override on the command line (every scalar training setting).
_CLI_KEYS = ["epochs", "learning_rate", "batch_size", "gradient_accumulation", "max_length", "truncation",
             "train_on", "lr_schedule", "stream_warmup_steps", "lr_scheduler", "warmup_ratio", "weight_decay",
             "max_grad_norm", "seed", "use_qlora", "gradient_checkpointing", "packing", "micro_batch_size",
             "micro_batch_tokens", "save_steps", "keep_checkpoints", "eval_steps", "eval_fraction",
             "lora.r", "lora.alpha", "lora.dropout", "lora.target_modules"]


def _field_docs() -> dict[str, str]:
    """The docstring under each field of Config and LoraConfig in config.py (attribute docstrings are source-only)."""
    import ast
    import inspect

    from trainingd import config

    docs: dict[str, str] = {}
    for node in ast.parse(inspect.getsource(config)).body:
        if isinstance(node, ast.ClassDef) and node.name in ("Config", "LoraConfig"):
            prefix = "lora." if node.name == "LoraConfig" else ""
            for field, doc in zip(node.body, node.body[1:]):
                if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                        and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
                    docs[prefix + field.target.id] = str(doc.value.value).strip()
    return docs


def _field_doc(key: str, docs: dict[str, str]) -> tuple[Any, str]:
    """Type and help text of a config key: its docstring from config.py and its default."""
    import typing

    from trainingd.config import LoraConfig

    cls, name = (LoraConfig, key.split(".")[1]) if key.startswith("lora.") else (Config, key)
    tp = typing.get_type_hints(cls)[name]
    args = [t for t in typing.get_args(tp) if t is not type(None)]
    if type(None) in typing.get_args(tp) and len(args) == 1:
        tp = args[0]  # "int | None" (null: from the model) takes an int on the command line
    default = {f.name: f for f in dataclasses.fields(cls)}[name]
    value = default.default if default.default is not dataclasses.MISSING else default.default_factory()
    return tp, f"{docs.get(key, '')} (config key {key!r}, default {value!r})".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train.py", epilog=exit_codes.TRAINER_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fine-tune a LoRA/QLoRA adapter on one JSONL file (chat messages, prompt/completion, alpaca,\n"
                    "sharegpt or text).")
    p.add_argument("--dataset", type=Path, required=True, help="training JSONL file")
    p.add_argument("--model", required=True,
                   help="the base model: a model folder; embedded:tiny-qwen3 or embedded:smollm2-135m (built once "
                        "under $TRAININGD_HOME/models, default ./models); a Hugging Face id such as Qwen/Qwen3-0.6B "
                        "(downloaded once); or an adapter folder (e.g. current_model) to train further on its base")
    p.add_argument("--output-dir", type=Path, required=True,
                   help="where the adapter is written; checkpoints go to OUTPUT_DIR/checkpoints/")
    p.add_argument("--config", type=Path, default=None, help="a config.json to start from (options override it)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in OUTPUT_DIR/checkpoints (refused if it "
                        "was made with other data, base or locked settings)")
    p.add_argument("--eval-file", type=Path, default=None, help="held-out JSONL file for the eval loss")
    p.add_argument("--job-id", default="standalone", help="name recorded in the checkpoints and adapter state")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="the frozen base's dtype (auto: the config's precision, else bf16 on GPUs that support it "
                        "and on CPUs whose bf16 matmul probe is fast, fp32 elsewhere)")
    docs = _field_docs()
    for key in _CLI_KEYS:
        tp, doc = _field_doc(key, docs)
        flag = "--" + key.replace("lora.", "lora-").replace("_", "-")
        dest = key.replace(".", "__")
        if tp is bool:
            p.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=doc)
        elif key == "lora.target_modules":
            p.add_argument(flag, dest=dest, nargs="+", default=None, metavar="NAME", help=doc)
        else:
            p.add_argument(flag, dest=dest, type=tp if tp in (int, float) else str, default=None, help=doc,
                           metavar={int: "N", float: "X"}.get(tp, "VALUE"))
    return p


def _standalone_config(a: argparse.Namespace, locked_from_adapter: dict | None) -> Config:
    data: dict[str, Any] = json.loads(a.config.read_text()) if a.config else {}
    # Dotted names of the settings given explicitly (in --config or as options).
    explicit = {k for k in data if k != "lora"} | {f"lora.{k}" for k in data.get("lora") or {}}
    for key in _CLI_KEYS:
        value = getattr(a, key.replace(".", "__"))
        if value is None:
            continue
        explicit.add(key)
        if key == "lora.target_modules" and value == ["all-linear"]:
            value = "all-linear"
        if key.startswith("lora."):
            data.setdefault("lora", {})[key.split(".")[1]] = value
        else:
            data[key] = value
    # Training an existing adapter further: its locked settings are the defaults (what it was made with);
    # an explicit option that contradicts them is reported as a mismatch, not silently ignored.
    for key, value in normalize_locked(locked_from_adapter).items():
        if key in explicit:
            continue
        if key.startswith("lora."):
            data.setdefault("lora", {})[key.split(".")[1]] = value
        else:
            data[key] = value
    return parse_config(data)


def standalone_main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    _setup_logging()
    from trainingd.train.recipe import RunSpec, StopSignal, execute

    stop = StopSignal().install()
    if not a.dataset.is_file():
        return _fail(exit_codes.USAGE, f"no such file: {a.dataset}", None)
    try:
        ref = resolve(a.model, Path.cwd(), models_dir=Home.at(None).models, key="--model")
    except ConfigError as e:
        return _fail(exit_codes.CONFIG_ERROR, str(e), None)
    # Training an existing adapter further: it is continued, with the locked settings it was made with.
    locked = (read_adapter_state(ref.adapter) or {}).get("locked") if ref.adapter else None
    try:
        cfg = _standalone_config(a, locked)
    except (ConfigError, OSError, json.JSONDecodeError) as e:
        return _fail(exit_codes.CONFIG_ERROR, str(e), None)
    _load_only_what_the_run_needs(cfg)
    try:
        base = fetch(ref, key="--model")
    except ConfigError as e:
        return _fail(exit_codes.CONFIG_ERROR, str(e), None)
    if locked is None or "base_model" not in locked:
        cfg = dataclasses.replace(cfg, base_model=str(base) if ref.kind == "folder" else ref.base)
    out = a.output_dir.expanduser().resolve()
    ckpt_dir = out / "checkpoints"
    if not a.resume and ckpt.latest_complete(ckpt_dir) is not None:
        return _fail(exit_codes.USAGE, f"{ckpt_dir} holds checkpoints of an earlier run: pass --resume to "
                                       "continue it, or delete them to start over", None)
    spec = RunSpec(dataset=a.dataset.resolve(), base_model=base, output_dir=out, checkpoint_dir=ckpt_dir, cfg=cfg,
                   job_id=a.job_id, init_adapter=ref.adapter, progress_path=out / "progress.json",
                   metrics_path=out / "metrics.jsonl", layer_activity_path=out / layer_activity.FILE,
                   tensorboard_dir=out / "tensorboard" / a.job_id, resume=a.resume, cache_dir=out / ".cache",
                   eval_file=a.eval_file.resolve() if a.eval_file else None, precision=_precision(a.precision, cfg),
                   stop_signal=stop)
    result_file = result_path(out)
    code = execute(spec, result_file)
    if os.environ.get("RANK", "0") == "0":  # under torchrun: one process reports
        result = read_result(result_file)
        print(json.dumps(result, indent=2))  # CLI output: the summary or the reason
    return code


if __name__ == "__main__":
    raise SystemExit(daemon_main())
