"""``cache/precision_probe.json``: how fast this machine multiplies in fp32 and in bf16. Stdlib only.

The trainer writes it (``precision: auto`` on a CPU probes a short matmul once per machine and keeps the result
here); the next trainer of the same home on the same machine reads it instead of probing again. One entry per
machine, keyed by :func:`machine_key` (host name, CPU model, CPU flags that matter, torch version, threads)::

    {"schema_version": 1,
     "machines": {"host|Intel(R) Xeon(R)|avx512f,...|2.13.0|2": {"fp32_gflops": 131.2, "bf16_gflops": 29.3,
                                                                "n": 1024, "measured_at": 1764470000.5}}}

Written with ``atomic_ops.atomic_write_json``; a file that cannot be read counts as no entry (the trainer probes
again and replaces it).

    python3 -c "from trainingd.contracts.precision_probe import read_probe; print(read_probe('cache', None))"
"""

from __future__ import annotations

import os
import platform
import socket
import time
from pathlib import Path

from trainingd.atomic_ops import atomic_write_json, read_json

FILE = "precision_probe.json"
SCHEMA_VERSION = 1
# CPU flags that decide how fast bf16 runs (a machine whose flags change is another machine).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2")


def cpu_info() -> tuple[str, set[str]]:
    """(model name, flags) from /proc/cpuinfo; ``("", set())`` where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or "", set()
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return model, flags


def machine_key(torch_version: str, threads: int) -> str:
    model, flags = cpu_info()
    return "|".join([socket.gethostname(), model, ",".join(f for f in BF16_FLAGS if f in flags), torch_version,
                     str(threads)])


def read_probe(cache_dir: Path | str | None, key: str | None) -> dict | None:
    """The entry for ``key`` (with ``key=None``: every machine's entry, by key); None when there is no cache
    folder, no file, an unreadable file or no valid entry."""
    if cache_dir is None:
        return None
    try:
        data = read_json(Path(cache_dir) / FILE, None)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        return None
    machines = data.get("machines")
    if not isinstance(machines, dict):
        return None
    if key is None:
        return dict(machines)
    entry = machines.get(key)
    if not isinstance(entry, dict):
        return None
    try:
        fp32, bf16 = float(entry["fp32_gflops"]), float(entry["bf16_gflops"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (fp32 > 0 and bf16 > 0):
        return None
    return {**entry, "fp32_gflops": fp32, "bf16_gflops": bf16}


def write_probe(cache_dir: Path | str, key: str, fp32_gflops: float, bf16_gflops: float, n: int) -> None:
    """Add or replace this machine's entry, keeping the other machines' (a home on a shared disk)."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    machines = read_probe(folder, None) or {}
    machines[key] = {"fp32_gflops": round(fp32_gflops, 1), "bf16_gflops": round(bf16_gflops, 1), "n": n,
                     "measured_at": time.time(), "pid": os.getpid()}
    atomic_write_json(folder / FILE, {"schema_version": SCHEMA_VERSION, "machines": machines})
