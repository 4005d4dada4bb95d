"""Base models as users name them: the same names in ``config.json``'s ``base_model`` and ``train.py --model``.

A name is one of:

* ``embedded:<name>`` -- a model built locally under the home's ``models/`` on first use
  (``trainingd/models/embedded.py``: ``embedded:tiny-qwen3``, the default, and ``embedded:smollm2-135m``);
* a local model folder (holding ``config.json``), absolute or relative to the home (``train.py``: to the current
  directory);
* an adapter folder (holding ``adapter_config.json``) such as ``current_model``: training goes on on top of its base
  (its ``base_model_name_or_path``, resolved by these same rules) and continues that adapter;
* a Hugging Face hub id such as ``Qwen/Qwen3-0.6B``: downloaded once into the Hugging Face cache where there is a
  network. Offline (``HF_HUB_OFFLINE=1``) and not cached, or when the download fails, the error says how to fetch it
  into a folder on another machine.

This module is stdlib only: the daemon checks a config with ``resolve`` and never imports torch. Fetching (building an
embedded model, downloading a hub model) runs in the trainer: ``trainingd.train.build_base.fetch``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from trainingd.contracts.checkpoint import ADAPTER_CONFIG
from trainingd.errors import ConfigError
from trainingd.models import embedded as embedded


KINDS = ("embedded", "folder", "hub")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Files of a hub model that loading needs (no *.bin/*.pth duplicates of the safetensors, no remote code).
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
# max_length when config.json leaves it null: the model's context, capped. Models advertise 32k-128k positions,
# but one example that long costs attention memory quadratic in its length and activations linear in it for the
# whole micro-batch, enough to run a single GPU (or a CPU box) out of memory on the first long line. 2048 covers
# nearly all chat/instruction examples; longer ones need an explicit max_length sized to the hardware.
MAX_LENGTH_CAP = 2048


@dataclass(frozen=True)
class BaseModel:
    """A resolved base model name."""

    name: str
    """As the user wrote it."""
    kind: str
    """How the base is obtained: ``embedded``, ``folder`` or ``hub``."""
    base: str
    """The base model's own name: ``name`` itself, or what an adapter folder's config names."""
    path: Path | None
    """The model folder: a folder's, an embedded model's (built or not), a cached hub snapshot; None: not fetched."""
    adapter: Path | None
    """An adapter folder to continue (when ``name`` names one), else None."""
    display_name: str

    def describe(self) -> str:
        where = str(self.path) if self.path is not None else f"{self.base} (Hugging Face hub, not downloaded yet)"
        if self.kind == "embedded" and not embedded.is_built(self.path):
            where += " (built on first use)"
        return f"{where} + adapter {self.adapter}" if self.adapter else where


def display_name(name: str) -> str:
    """What status and the monitor show for a base name when ``model_display_name`` is not set."""
    if embedded.is_embedded(name):
        try:
            return embedded.lookup(name).display_name
        except embedded.EmbeddedError:
            return f"{name[len(embedded.PREFIX):]} (embedded)"
    return Path(name.rstrip("/")).name or name


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, located as huggingface_hub does (without importing it)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return Path(hf_home).expanduser() / "hub"


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (its ``main`` revision), or None when it is not downloaded."""
    repo = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    try:
        commit = (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None
    snap = repo / "snapshots" / commit
    return snap if (snap / "config.json").is_file() else None


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def how_to_fetch(repo_id: str, key: str = "config key 'base_model'") -> str:
    local = "models/" + repo_id.split("/")[-1].lower()
    use = f"pass --model {local}" if key == "--model" else f"set base_model to \"{local}\""
    return (f"on a machine with a network run `hf download {repo_id} --local-dir {local}` (`huggingface-cli "
            f"download` with older huggingface_hub), copy that folder here and {use}")


def adapter_base_name(adapter_dir: Path) -> str | None:
    """The base an adapter folder was trained on (``base_model_name_or_path`` of its adapter_config.json)."""
    try:
        data = json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data.get("base_model_name_or_path") if isinstance(data, dict) else None


def resolve(name: str, root: Path, *, models_dir: Path | None = None, key: str = "config key 'base_model'",
            _inside_adapter: bool = False) -> BaseModel:
    """Resolve a base model name (see the module docstring); raises ConfigError saying what to do.

    ``root`` is where relative folders are looked up (the home; the current directory for ``train.py``);
    ``models_dir`` is where embedded models are built (default ``root/models``).
    """
    root = Path(root)
    models_dir = Path(models_dir) if models_dir is not None else root / "models"
    name = (name or "").strip()
    if not name:
        raise ConfigError(f"{key} is empty")
    if embedded.is_embedded(name):
        try:
            model = embedded.lookup(name)
            path = embedded.folder(model, models_dir)
            if not embedded.is_built(path):
                embedded.check_buildable(model)
        except embedded.EmbeddedError as e:
            raise ConfigError(f"{key}: {e}") from None
        return BaseModel(name, "embedded", name, path, None, model.display_name)

    path = Path(name).expanduser()
    if not path.is_absolute():
        path = root / path
    if path.is_dir():
        if (path / ADAPTER_CONFIG).is_file() and not _inside_adapter:
            base_name = adapter_base_name(path)
            if not base_name:
                raise ConfigError(f"{key}: {path}/adapter_config.json names no base_model_name_or_path")
            # A relative base in an adapter's config is relative to the adapter folder (PEFT writes what it loaded).
            base = resolve(base_name, path, models_dir=models_dir, key=f"{key} ({path} is an adapter; its base)",
                           _inside_adapter=True)
            return replace(base, name=name, adapter=path.resolve(),
                           display_name=f"{base.display_name} + {path.name}")
        if (path / "config.json").is_file():
            return BaseModel(name, "folder", str(path.resolve()), path.resolve(), None, display_name(name))
        raise ConfigError(f"{key}: {path} holds neither config.json (a model folder) nor adapter_config.json "
                          "(an adapter folder)")
    if HUB_ID.match(name) and not name.startswith("."):
        cached = cached_hub_snapshot(name)
        if cached is None and is_offline():
            raise ConfigError(f"{key}: no model folder at {path}, and {name!r} as a Hugging Face model id is not "
                              f"in the cache ({hub_cache_dir()}) while HF_HUB_OFFLINE is set: "
                              f"{how_to_fetch(name, key)}")
        return BaseModel(name, "hub", name, cached, None, display_name(name))
    raise ConfigError(f"{key}: no model at {path} (expected a model folder with config.json, an adapter folder, "
                      f"{' or '.join(embedded.PREFIX + n for n in embedded.REGISTRY)}, or a Hugging Face id such "
                      "as Qwen/Qwen3-0.6B)")


def default_max_length(model_dir: Path) -> int:
    """max_length when the config leaves it null: the model's ``max_position_embeddings``, capped (see above)."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        cfg = {}
    positions = None
    for section in (cfg, cfg.get("text_config") or {}):
        for k in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            if isinstance(section.get(k), int) and section[k] > 0:
                positions = section[k]
                break
        if positions:
            break
    return min(positions or MAX_LENGTH_CAP, MAX_LENGTH_CAP)
