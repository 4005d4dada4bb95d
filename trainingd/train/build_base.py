"""Getting a base model onto disk (the trainer's side: the embedded builders import torch).

``fetch`` turns a resolved base (``trainingd.models.base_model.resolve``, stdlib) into the folder to load: it builds
an embedded model once (``ensure_built``) or downloads a hub model into the Hugging Face cache. The daemon and the
command lines never call these in-process; they run this module as its own process::

    python -m trainingd.train.build_base smollm2-135m [--models DIR]      # build one now (default DIR: ./models)
"""

from __future__ import annotations

import argparse
import fcntl
import importlib
import logging
import sys
import time
from pathlib import Path
from typing import Callable

from trainingd.errors import ConfigError
from trainingd.exit_codes import CONFIG_ERROR
from trainingd.models import embedded
from trainingd.models.base_model import HUB_FILES, BaseModel, how_to_fetch

log = logging.getLogger(__name__)


def _builder(model: embedded.EmbeddedModel) -> Callable[[Path], Path]:
    module, _, func = model.builder.partition(":")
    return getattr(importlib.import_module(module), func)


def ensure_built(model: embedded.EmbeddedModel, models_dir: Path) -> Path:
    """Build ``model`` under ``models_dir`` unless it is there; returns its folder.

    Safe when several processes race: an flock serialises the builders and the builder writes a temp
    folder that it renames into place, so a reader sees a whole model or none.
    """
    out = embedded.folder(model, models_dir)
    if embedded.is_built(out):
        return out
    embedded.check_buildable(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not embedded.is_built(out):
            log.info("building the embedded base model %s at %s (once)", model.name, out)
            t0 = time.monotonic()
            _builder(model)(out)
            log.info("built %s in %.1f s", out, time.monotonic() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainingd.train.build_base",
                                description="Build an embedded base model now (it is otherwise built on first use).")
    p.add_argument("name", choices=sorted(embedded.REGISTRY), help="which model")
    p.add_argument("--models", type=Path, default=Path("models"), help="the models folder (default ./models)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        print(ensure_built(embedded.lookup(a.name), a.models))
    except embedded.EmbeddedError as e:
        print(f"trainingd.train.build_base: {e}", file=sys.stderr)
        return CONFIG_ERROR
    return 0


def fetch(ref: BaseModel, key: str = "config key 'base_model'") -> Path:
    """The folder to load ``ref`` from, building an embedded model or downloading a hub model first (trainer only).

    Raises ConfigError (the daemon pauses on it rather than failing jobs) when that is not possible.
    """
    if ref.kind == "embedded":
        try:
            return ensure_built(embedded.lookup(ref.base), ref.path.parent)
        except embedded.EmbeddedError as e:
            raise ConfigError(f"base model {ref.base}: {e}") from None
    if ref.path is not None:
        return ref.path
    try:
        from huggingface_hub import snapshot_download

        log.info("downloading %s from the Hugging Face hub (once; later runs use the cache)", ref.base)
        return Path(snapshot_download(ref.base, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, unknown or gated repo, network error: all mean "fetch it another way"
        log.warning("could not download %s: %s", ref.base, e)
        raise ConfigError(f"base model {ref.base!r} could not be downloaded ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}): {how_to_fetch(ref.base, key)}") from None

if __name__ == "__main__":
    raise SystemExit(main())
