"""Initialise a home: its runtime folders and a default ``config.json`` (an existing config is kept).

    python -m trainingd init [--home DIR]

The daemon creates the same folders on start; this lets a user prepare a home (and edit its config)
before the first start.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from .atomic_ops import fsync_dir
from .config import default_config_json
from .paths import Home

log = logging.getLogger(__name__)


def init_home(home: Home) -> dict[str, Any]:
    """Create what is missing; returns ``{"home", "created": [paths], "config": "written"|"kept"}``."""
    home.root.mkdir(parents=True, exist_ok=True)
    created = []
    for folder in home.runtime_dirs():
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            created.append(str(folder))
    config = "written" if _write_new(home.config, default_config_json()) else "kept"
    log.info("initialised %s: %d folders created, config %s", home.root, len(created), config)
    return {"home": str(home.root), "created": created, "config": config}


def _write_new(path: Path, text: str) -> bool:
    """Write ``path`` complete and durable, but only if it does not exist yet (False when it did).

    ``os.link`` of a finished temporary file refuses to replace an existing name, so a config a user
    wrote meanwhile is never overwritten and nobody ever reads a half-written one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        fsync_dir(path.parent)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)
