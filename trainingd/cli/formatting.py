"""Text views of the command handlers' dicts: the one place that turns results into what a person reads.

Handlers (``trainingd.cli.controller``, ``trainingd.cli.queue``, ``trainingd.cli.home``'s init, ``trainingd.cli.main``'s
validate) return dicts; ``--json`` prints them with ``print_json``; everything else is formatted here.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from trainingd.paths import PRIORITIES


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


# --- training_controller.py status -----------------------------------------------------------------

def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def progress_bar(fraction: float | None, width: int = 30) -> str:
    if fraction is None:
        return "[" + "?" * width + "]"
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:5.1f}%"


def _num(value: Any, fmt: str = "") -> str:
    if value is None:
        return "-"
    if not fmt and isinstance(value, float) and value.is_integer():
        value = int(value)  # counters (step, epoch) may arrive as JSON floats
    return format(value, fmt)


def format_data_counts(data: dict[str, Any]) -> str:
    """``500 chat examples, 480 kept, 20 dropped as longer than max_length 512, 0 truncated``."""
    text = f"{_num(data.get('examples'))} {data.get('format') or ''} examples, {_num(data.get('kept'))} kept"
    if data.get("dropped_too_long"):
        text += f", {data['dropped_too_long']} dropped as longer than max_length {_num(data.get('max_length'))}"
    if data.get("truncated"):
        text += f", {data['truncated']} truncated to max_length {_num(data.get('max_length'))}"
    if data.get("no_trained_tokens"):
        text += f", {data['no_trained_tokens']} without a trained token"
    return text


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable view of ``controller.status_summary``."""
    st = summary.get("status") or {}
    lines = [f"home:      {summary.get('home')}"]
    daemon = st.get("daemon") or {}
    if summary.get("daemon_running"):
        lines.append(f"daemon:    running (pid {daemon.get('pid', '?')}, version {daemon.get('version', '?')})")
    else:
        lines.append("daemon:    daemon not running" + (" (last known status below)" if st else ""))
    if not st:
        lines.append("status:    no status file yet")
    else:
        state = st.get("status") or "unknown"
        detail = st.get("status_detail")
        lines.append(f"state:     {state}" + (f" - {detail}" if detail else ""))
        job = st.get("job")
        if job:
            lines.append(f"job:       {job.get('id')}  file {job.get('file')}  priority {job.get('priority')}")
            step, total = job.get("step"), job.get("total_steps")
            fraction = job.get("progress")
            if fraction is None and step is not None and total:
                fraction = step / total
            lines.append(f"progress:  {progress_bar(fraction)}  step {_num(step)}/{_num(total)}"
                         f"  epoch {_num(job.get('epoch'))}")
            if job.get("precision"):
                lines.append(f"precision: {job['precision']} (the frozen base; LoRA and AdamW in fp32)")
            data = job.get("data")
            if data:
                lines.append("data:      " + format_data_counts(data))
        m = st.get("metrics") or {}
        lines.append(f"loss:      {_num(m.get('loss'), '.4f')} (ema {_num(m.get('loss_ema'), '.4f')})"
                     f"  eval {_num(m.get('eval_loss'), '.4f')}  lr {_num(m.get('learning_rate'), '.2e')}")
        lines.append(f"speed:     {_num(m.get('tokens_per_s'), '.0f')} tokens/s"
                     f"  {_num(m.get('seconds_per_step'), '.2f')} s/step  ETA {format_duration(m.get('eta_seconds'))}")
        prep = st.get("prepare")
        if prep:
            lines.append(f"prepare:   {prep.get('phase')} {_num(prep.get('lines_done'))}"
                         f"/{_num(prep.get('lines_total'))} lines")
        gate = st.get("gate")
        if isinstance(gate, dict) and gate.get("line"):
            lines.append(f"gate:      {gate['line']}")
        ag = st.get("auto_generate")
        if isinstance(ag, dict) and ag.get("enabled") and ag.get("level") is not None:
            lines.append(f"generate:  level {ag['level']} ({ag.get('state')}): {ag.get('level_reason')}")
        control = st.get("control") or {}
        lines.append(f"paused:    {'yes' if control.get('paused') else 'no'}"
                     + ("  (stopping)" if control.get("stopping") else ""))
        err = st.get("last_error")
        if err:
            lines.append(f"last error: {err.get('message')} (job {err.get('job_id')}, {err.get('at')})")
        for fault in st.get("faults") or []:
            if isinstance(fault, dict):
                where = f" ({fault.get('path')})" if fault.get("path") else ""
                lines.append(f"fault:     {fault.get('subsystem')}: {fault.get('message')}{where}; "
                             f"fix: {fault.get('fix')}")
        live = st.get("liveness") or {}
        if isinstance(live, dict) and live.get("stalled"):
            lines.append(f"stuck:     {live.get('problem')}; fix: {live.get('fix')}")
        lines.append(f"updated:   {st.get('updated_at')} (seq {st.get('seq')})")
    lines.append("queue:     " + _format_queue_counts(summary))
    return "\n".join(lines)


def _format_queue_counts(summary: dict[str, Any]) -> str:
    counts = {"high": 0, "normal": 0, "low": 0, "processing": 0, "done": 0, "failed": 0}
    known = summary.get("counts") or {}  # every job of each state (the listed ones are only the newest finished)
    counts.update({p: n for p, n in (known.get("pending") or {}).items() if p in PRIORITIES})
    counts.update({k: known[k] for k in ("processing", "done", "failed") if isinstance(known.get(k), int)})
    pending = sum(counts[p] for p in PRIORITIES)
    by_priority = ", ".join(f"{p} {counts[p]}" for p in PRIORITIES)
    return (f"pending {pending} ({by_priority})  processing {counts['processing']}  done {counts['done']}"
            f"  failed {counts['failed']}")


# --- training_queue.py list / status ---------------------------------------------------------------

def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _when(value: Any) -> str:
    if not value:
        return "-"
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")
    return str(value).replace("T", " ")[:19]


def format_jobs(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("ID", "STATE", "PRIORITY", "NAME", "SIZE", "SHA256", "ENQUEUED", "REASON")]
    for j in jobs:
        reason = (j.get("reason") or "") if j.get("state") == "failed" else ""
        if j.get("broken") and j.get("state") != "failed":
            reason = f"{j['broken']}: the daemon will fail this job (data file kept)"
        rows.append((j["id"], j["state"], j.get("priority") or "-", j.get("original_name") or "-",
                     _size(j.get("size_bytes")), (j.get("sha256") or "-")[:12], _when(j.get("enqueued_at")),
                     reason.splitlines()[0] if reason else ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(("  ".join(str(c).ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]).rstrip() for r in rows)


def format_counts(c: dict[str, Any]) -> str:
    pending = c.get("pending") or {}
    lines = [f"pending     {sum(pending.values())}"]
    lines += [f"  {p:<9} {pending.get(p, 0)}" for p in PRIORITIES]
    lines += [f"{s:<11} {c.get(s, 0)}" for s in ("processing", "done", "failed")]
    return "\n".join(lines)


# --- trainingd init / config_validator.py / the request commands ------------------------------------

def format_init(result: dict[str, Any]) -> str:
    lines = [f"initialised {result['home']}"]
    lines += [f"  created {folder}" for folder in result["created"]]
    if result["config"] == "written":
        lines.append(f"  wrote default config {result['config_path']}")
    else:
        lines.append(f"  kept existing config {result['config_path']}")
    return "\n".join(lines)


def format_validation(result: dict[str, Any]) -> str:
    """``ok: PATH`` for a valid config; otherwise the reason, naming the key."""
    if not result["ok"]:
        return result["error"]
    note = " (no config.json: defaults)" if result.get("defaults") else ""
    return "\n".join([f"ok: {result['path']}{note}", *(f"warning: {w}" for w in result.get("warnings") or ())])


def format_watch_frame(summary: dict[str, Any], now: datetime) -> str:
    """One redraw of ``status --watch``: clear the screen, home the cursor, draw the summary."""
    return "\033[2J\033[H" + format_summary(summary) + f"\n\n(refreshed {now:%H:%M:%S}; Ctrl-C quits)\n"
