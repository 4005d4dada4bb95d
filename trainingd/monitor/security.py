"""What keeps the monitor a local, read-only view: Host and Origin checks, and the control token.

- DNS rebinding: a page on another site can make a browser send requests to 127.0.0.1 under a name it
  controls; such a request carries that name in ``Host``, so anything but localhost, 127.0.0.1, [::1] or the
  configured host (with the server's port, or none) is refused.
- Control calls (pause/resume/skip) need the token kept in ``control/monitor_token`` (mode 0600: only the
  owner of the home can read it) in the ``X-Trainingd-Token`` header, and an ``Origin`` that is the server
  itself (or none, as curl sends).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Trainingd-Token"
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"name:port"`` / ``"[::1]:port"`` / ``"name"`` -> (lowercased name, port); None when malformed."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[:end + 1], value[end + 1:]
    else:
        name, _, port_text = value.partition(":")
        rest = ":" + port_text if _ else ""
    if not rest:
        return name, None
    if not rest.startswith(":") or not rest[1:].isdigit():
        return None
    return name, int(rest[1:])


def allowed_host(header: str | None, bound_host: str, port: int) -> bool:
    """True when ``Host`` names this machine's loopback or the configured host, with our port or none."""
    if not header:
        return False
    parsed = split_host(header)
    if parsed is None:
        return False
    name, p = parsed
    names = {*LOCAL_NAMES, bound_host.lower(), f"[{bound_host.lower()}]"}
    names.discard("0.0.0.0")  # binding every interface is not a name anyone should reach it by
    names.discard("[0.0.0.0]")
    return name in names and (p is None or p == port)


def same_origin(origin: str | None, host_header: str | None) -> bool:
    """No Origin (curl, a same-origin GET) or exactly ``http://<Host>``; ``null`` and others are refused."""
    if origin is None:
        return True
    return bool(host_header) and origin.strip().lower() == f"http://{host_header.strip().lower()}"


def ensure_token(path: Path) -> str:
    """The control token; created (32 random bytes, mode 0600, never replaced) when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warning("%s was readable by others (mode %o); set to 0600", path, mode)
            os.chmod(path, 0o600)
        token = path.read_text().strip()
        if token:
            return token
        path.unlink()
        return ensure_token(path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o600)  # the umask may have dropped bits, never added: make the mode exact anyway
    return token


def token_matches(sent: str | None, token: str) -> bool:
    return bool(sent) and hmac.compare_digest(sent.strip().encode(), token.encode())
