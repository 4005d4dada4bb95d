"""The errors several layers raise, below all of them (stdlib only, imports nothing of trainingd).

``ConfigError`` is raised by ``trainingd.config`` (a key) and by ``trainingd.models.base_model`` (a base model that
cannot be used); ``trainingd.config`` re-exports it, so callers keep ``from trainingd.config import ConfigError``.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """config.json cannot be used; the message names the key and what is wrong."""
