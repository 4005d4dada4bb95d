"""The machine as the monitor shows it: CPU, RAM, disk of the home, process RSS (psutil), GPUs (NVML).

Every NVML call is guarded on its own: no GPU, no driver, or one query a card does not support gives ``null``
for that value and never an exception. NVML is initialised once per process, on first use.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import psutil

from trainingd.contracts.trainer_record import read_trainer_record
from trainingd.instance import is_daemon_running, read_pid
from trainingd.paths import Home

log = logging.getLogger(__name__)

_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {"tried": False, "ok": False, "error": None}


def _guard(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as e:  # NVML raises its own NVMLError family, and a missing library raises others
        log.debug("NVML call failed: %s", e)
        return None


def _nvml() -> Any | None:
    """The pynvml module, initialised; None when there is no usable NVML here."""
    with _nvml_lock:
        if not _nvml_state["tried"]:
            _nvml_state["tried"] = True
            try:
                import pynvml
                pynvml.nvmlInit()
                _nvml_state.update(ok=True, module=pynvml)
            except Exception as e:
                _nvml_state["error"] = str(e)
                log.info("no GPU information (NVML: %s)", e)
        return _nvml_state.get("module") if _nvml_state["ok"] else None


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def gpus() -> list[dict[str, Any]]:
    """One dict per GPU: name, util_percent, memory used/total (bytes), temperature_c, power_w, processes."""
    nv = _nvml()
    if nv is None:
        return []
    count = _guard(nv.nvmlDeviceGetCount) or 0
    out = []
    for i in range(count):
        h = _guard(lambda: nv.nvmlDeviceGetHandleByIndex(i))
        if h is None:
            out.append({"index": i, "name": None})
            continue
        util = _guard(lambda: nv.nvmlDeviceGetUtilizationRates(h))
        mem = _guard(lambda: nv.nvmlDeviceGetMemoryInfo(h))
        power_mw = _guard(lambda: nv.nvmlDeviceGetPowerUsage(h))
        procs = _guard(lambda: nv.nvmlDeviceGetComputeRunningProcesses(h)) or []
        out.append({
            "index": i,
            "name": _text(_guard(lambda: nv.nvmlDeviceGetName(h))),
            "util_percent": getattr(util, "gpu", None),
            "memory_used_bytes": getattr(mem, "used", None),
            "memory_total_bytes": getattr(mem, "total", None),
            "temperature_c": _guard(lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            "power_w": power_mw / 1000.0 if isinstance(power_mw, (int, float)) else None,
            "processes": [{"pid": getattr(p, "pid", None), "memory_used_bytes": getattr(p, "usedGpuMemory", None)}
                          for p in procs],
        })
    return out


def _rss(pid: int | None) -> int | None:
    if not pid:
        return None
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return None


def processes(home: Home) -> dict[str, Any]:
    """The daemon's and the trainer's pid and RSS; null when not running."""
    running = is_daemon_running(home)
    daemon_pid = read_pid(home) if running else None
    record = read_trainer_record(home) if running else None
    trainer_pid = record.pid if record is not None and psutil.pid_exists(record.pid) else None
    return {"daemon": {"pid": daemon_pid, "rss_bytes": _rss(daemon_pid)},
            "trainer": {"pid": trainer_pid, "rss_bytes": _rss(trainer_pid)}}


def memory() -> dict[str, Any]:
    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    return {"total_bytes": vm.total, "available_bytes": vm.available, "used_bytes": vm.used,
            "percent": vm.percent, "swap_used_bytes": sw.used, "swap_total_bytes": sw.total}


def disk(home: Home) -> dict[str, Any] | None:
    try:
        du = psutil.disk_usage(str(home.root))
    except OSError:
        return None
    return {"path": str(home.root), "total_bytes": du.total, "used_bytes": du.used, "free_bytes": du.free,
            "percent": du.percent}


def system(home: Home) -> dict[str, Any]:
    return {
        "cpu": {"percent": psutil.cpu_percent(interval=None), "count": psutil.cpu_count(),
                "load_average": list(psutil.getloadavg())},
        "memory": memory(),
        "disk": disk(home),
        "processes": processes(home),
        "gpus": gpus(),
    }
