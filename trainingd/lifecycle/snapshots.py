"""Snapshots of the live adapter, its lineage, rollback and rotation. Stdlib only (the daemon calls it).

    trainingd lineage [--home DIR] [--json]          # = training_controller.py history
    trainingd rollback SNAPSHOT [--home DIR]         # daemon paused (no job in processing/) or stopped
    trainingd adapter new [--keep-as NAME]           # archive the adapter, start a fresh one
    trainingd snapshot list|pin|unpin [NAME]

After each job that succeeds the daemon copies ``current_model/`` (the adapter files and adapter_state.json,
never ``checkpoints/``) to ``snapshots/<YYYYMMDD_HHMMSS>_<job>/`` through a ``.tmp-*`` folder and one rename,
with a ``manifest.json``::

    {"name", "created_at", "sequence": 1 + the highest sequence in snapshots/ (their order: names taken within
     one second sort "-10" before "-2", and a clock may step back),
     "reason": "job"|"rollback"|"consolidate"|"adapter_new"|"manual"|"rejected", "label",
     "base_model", "base_model_hash", "generation", "generation_id",
     "parent": "<snapshot name>"|null,          # the newest snapshot whose trained jobs are a prefix of ours
     "trained_file": {"job_id", "name", "sha256", "lines", "trained_tokens"}|null,
     "steps", "final_loss", "eval_loss", "config": {...}, "code_version",
     "trained": [...], "trained_segments": [...], "trained_count",   # as in adapter_state.json
     "trained_digest": "sha256 of the job ids and file hashes in order"}   # to find the parent without reading them

The snapshot's ``trained/`` folder hard-links the sealed segments of the live adapter's trained list
(``trainingd.contracts.adapter_state``): they are immutable, so a snapshot costs no copy of them.

A candidate the gate rejected (``trainingd.lifecycle.gate``) is not published but kept, by the trainer, as
``snapshots/<stamp>_<job>-rejected/`` (reason ``rejected``, pinned, with ``gate`` = the decision and the
candidate's ``gate_scores.json``); ``trainingd promote SNAPSHOT`` publishes one by hand (as a rollback does).

A ``PINNED`` file in a snapshot keeps it from pruning (backups taken before a rollback, a consolidation or an
adapter rotation are pinned). Only the newest ``keep_snapshots`` unpinned snapshots are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from trainingd import __version__
from trainingd.atomic_ops import durable_copy, fsync_dir, publish_folder, retire_folder
from trainingd.contracts.adapter_state import (iter_trained, link_segments, read_adapter_state, segment_names,
                                               trained_count, trained_entries)
from trainingd.contracts.checkpoint import ADAPTER_FILES, has_adapter, publish_adapter
from trainingd.contracts.job import read_job
from trainingd.contracts.lineage_manifest import FILE as MANIFEST
from trainingd.contracts.lineage_manifest import read_lineage_manifest, write_lineage_manifest
from trainingd.paths import Home

log = logging.getLogger(__name__)

PINNED = "PINNED"
# Snapshots taken for these reasons are backups a person relies on: never pruned.
PINNED_REASONS = ("rollback", "consolidate", "adapter_new", "manual", "rejected")
REJECTED = "rejected"


class SnapshotError(Exception):
    """A snapshot cannot be taken, found or restored; the message says why and what to do."""


def _digests(entries, at: set[int]) -> dict[int, str]:
    """The ``trained_digest`` of the first ``n`` entries for each ``n`` in ``at`` (and of them all, at key -1)."""
    h, n, out = hashlib.sha256(), 0, {}
    if 0 in at:
        out[0] = h.hexdigest()
    for t in entries:
        h.update(f"{t.get('job_id')}\t{t.get('sha256')}\n".encode("utf-8", "surrogateescape"))
        n += 1
        if n in at:
            out[n] = h.hexdigest()
    out[-1] = h.hexdigest()
    return out


def _snapshot_trained(manifest: dict) -> tuple[int, str] | None:
    """(count, digest) of a snapshot's trained jobs; from the full list in manifests written before digests."""
    if isinstance(manifest.get("trained_digest"), str) and isinstance(manifest.get("trained_count"), int):
        return manifest["trained_count"], manifest["trained_digest"]
    listed = manifest.get("trained")
    if isinstance(listed, list) and not segment_names(manifest):
        entries = [t for t in listed if isinstance(t, dict)]
        return len(entries), _digests(entries, set())[-1]
    return None


def trained_fields(folder: Path, state: dict) -> dict[str, Any]:
    """The manifest's record of the trained jobs of ``state`` (read from ``folder``): small, whatever their number."""
    out: dict[str, Any] = {"trained": state.get("trained") or [], "trained_count": trained_count(state),
                           "trained_digest": _digests(iter_trained(state, folder), set())[-1]}
    if segment_names(state):
        out["trained_segments"] = segment_names(state)
    return out


def _order(snapshot: dict[str, Any]) -> tuple:
    """Oldest first: by ``sequence``; snapshots from before sequences come first, by name with its numbers
    compared as numbers (``<stamp>_<job>-10`` after ``-2``)."""
    seq = snapshot["manifest"].get("sequence")
    natural = [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", snapshot["name"])]
    if isinstance(seq, int) and not isinstance(seq, bool):
        return (1, seq, natural)
    return (0, 0, natural)


def _next_sequence(existing: list[dict[str, Any]]) -> int:
    seqs = [s["manifest"].get("sequence") for s in existing]
    return 1 + max((n for n in seqs if isinstance(n, int) and not isinstance(n, bool)), default=0)


def list_snapshots(home: Home) -> list[dict[str, Any]]:
    """Every complete snapshot, oldest first: ``{"name", "path", "pinned", "manifest"}``."""
    out = []
    root = home.snapshots
    if not root.is_dir():
        return out
    for p in root.iterdir():
        if p.name.startswith(".") or not p.is_dir():
            continue
        manifest = read_lineage_manifest(p)
        if manifest is None:
            continue  # not a snapshot (a folder a person put there): left alone
        out.append({"name": p.name, "path": str(p), "pinned": (p / PINNED).exists(), "manifest": manifest})
    return sorted(out, key=_order)


def find_snapshot(home: Home, name: str) -> Path:
    """A snapshot by its folder name (or a unique prefix, or a path); raises SnapshotError."""
    as_path = Path(name).expanduser()
    if as_path.is_absolute() and (as_path / MANIFEST).is_file():
        return as_path
    names = [s["name"] for s in list_snapshots(home)]
    hits = [n for n in names if n == name] or [n for n in names if n.startswith(name) or n.endswith(name)]
    if len(hits) != 1:
        known = ", ".join(names[-10:]) or "none"
        raise SnapshotError(f"no single snapshot matches {name!r} ({len(hits)} match); snapshots: {known}")
    return home.snapshots / hits[0]


def _count_lines(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None


def _parent(existing: list[dict], folder: Path, state: dict) -> str | None:
    """The newest snapshot whose trained jobs are a proper prefix of ``state``'s (the longest such prefix)."""
    theirs = {s["name"]: t for s in existing if (t := _snapshot_trained(s["manifest"])) is not None}
    mine = _digests(iter_trained(state, folder), {n for n, _ in theirs.values()})
    count = trained_count(state)
    best: tuple[int, str] | None = None
    for s in existing:
        t = theirs.get(s["name"])
        if t is not None and t[0] < count and mine.get(t[0]) == t[1]:
            if best is None or t[0] >= best[0]:
                best = (t[0], s["name"])
    return best[1] if best else None


def _unique(root: Path, base: str) -> Path:
    path, n = root / base, 2
    while path.exists():
        path, n = root / f"{base}-{n}", n + 1
    return path


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip(".-") or "snapshot"


def copy_folder(src: Path, dest: Path, write_extra=None, names: tuple[str, ...] | None = None) -> Path:
    """Copy the top-level files of ``src`` (no folders, no hidden files; only ``names`` when given) to ``dest`` via
    a temp folder + rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{time.time_ns()}"
    tmp.mkdir()
    try:
        for f in sorted(Path(src).iterdir()):
            if f.is_file() and not f.name.startswith(".") and (names is None or f.name in names):
                durable_copy(f, tmp / f.name)
        if write_extra is not None:
            write_extra(tmp)
        publish_folder(tmp, dest, point="snapshot")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def take_snapshot(home: Home, *, reason: str = "job", job: Any = None, result: dict | None = None,
                  config: dict | None = None, label: str | None = None, pin: bool | None = None) -> Path | None:
    """Copy the live adapter into ``snapshots/``; returns the folder (None when there is no adapter yet).

    For ``reason="job"`` an adapter generation already snapshotted is not copied again (a job completed at
    start-up after a crash, a duplicate); the existing snapshot is returned.
    """
    src = home.current_model
    if not has_adapter(src):
        return None
    state = read_adapter_state(src) or {}
    existing = list_snapshots(home)
    if reason == "job" and state.get("generation_id"):
        for s in existing:
            if s["manifest"].get("generation_id") == state["generation_id"]:
                return Path(s["path"])
    result = result or {}
    trained_file = None
    if job is not None:
        meta = job.meta
        trained_file = {"job_id": job.id, "name": meta.get("original_name"), "sha256": meta.get("sha256"),
                        "lines": _count_lines(job.data_file), "trained_tokens": result.get("trained_tokens")}
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    suffix = _safe(label or (job.id if job is not None else reason))
    dest = _unique(home.snapshots, f"{stamp}_{suffix}")
    pinned = reason in PINNED_REASONS if pin is None else pin
    manifest = {"name": dest.name, "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "sequence": _next_sequence(existing), "reason": reason, "label": label,
                "base_model": state.get("base_model"),
                "base_model_hash": state.get("base_model_hash"),
                "base_content_sha256": state.get("base_content_sha256"), "generation": state.get("generation"),
                "generation_id": state.get("generation_id"), "parent": _parent(existing, src, state),
                "trained_file": trained_file, "steps": result.get("steps"), "final_loss": result.get("loss"),
                "eval_loss": result.get("eval_loss"), "config": config, "code_version": __version__,
                "restored_from": state.get("restored_from"), **trained_fields(src, state)}

    def extra(tmp: Path) -> None:
        link_segments(src, tmp, state)
        write_lineage_manifest(tmp, manifest)
        if pinned:
            (tmp / PINNED).write_text(f"{reason}\n")

    copy_folder(src, dest, extra)
    log.info("snapshot %s of the adapter (generation %s, %s)", dest.name, state.get("generation"), reason)
    return dest


def keep_rejected(home: Home, src: Path, state: dict, *, trained_file: dict, decision: dict, scores: dict | None,
                  config: dict | None, result: dict | None = None) -> Path:
    """Keep a candidate the gate rejected: its adapter files (from its final checkpoint ``src``), the adapter state
    it would have had, its gate scores and a manifest marked ``rejected``. Pinned; returns the folder."""
    from trainingd.contracts.adapter_state import write_adapter_state
    from trainingd.contracts.gate_scores import write_gate_scores

    existing = list_snapshots(home)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    dest = _unique(home.snapshots, f"{stamp}_{_safe(str(trained_file.get('job_id')))}-{REJECTED}")
    result = result or {}
    manifest = {"name": dest.name, "created_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "sequence": _next_sequence(existing), "reason": REJECTED, "label": None,
                "base_model": state.get("base_model"),
                "base_model_hash": state.get("base_model_hash"),
                "base_content_sha256": state.get("base_content_sha256"), "generation": state.get("generation"),
                "generation_id": state.get("generation_id"),
                "parent": _parent(existing, home.current_model, state),
                "trained_file": trained_file, "steps": result.get("steps"), "final_loss": result.get("loss"),
                "eval_loss": result.get("eval_loss"), "config": config, "code_version": __version__,
                "restored_from": None, "gate": decision}

    def extra(tmp: Path) -> None:
        # The candidate's state names the live adapter's sealed segments (it grew from it); sealing may add one.
        written = write_adapter_state(tmp, state, segments_from=[home.current_model])
        manifest.update(trained_fields(tmp, written))
        if scores is not None:
            write_gate_scores(tmp, scores)
        write_lineage_manifest(tmp, manifest)
        (tmp / PINNED).write_text(f"{REJECTED}\n")

    copy_folder(src, dest, extra, names=ADAPTER_FILES)
    log.info("kept the rejected candidate of job %s as snapshot %s", trained_file.get("job_id"), dest.name)
    return dest


def rejected_snapshots(home: Home) -> dict[str, str]:
    """Job id -> the name of its (newest) rejected snapshot."""
    return {(s["manifest"].get("trained_file") or {}).get("job_id"): s["name"] for s in list_snapshots(home)
            if s["manifest"].get("reason") == REJECTED}


def prunable_snapshots(home: Home, keep: int) -> list[Path]:
    """The unpinned snapshots beyond the newest ``keep``, oldest first."""
    unpinned = [Path(s["path"]) for s in list_snapshots(home) if not s["pinned"]]
    return unpinned[:-keep] if keep > 0 else unpinned


def prunable_rejected(home: Home, keep: int | None) -> list[Path]:
    """Rejected candidates beyond the newest ``keep`` (None: all kept), oldest first. Only those pinned for being
    rejected: one pinned by hand (``trainingd snapshot pin``, "manual" in PINNED) stays."""
    if keep is None:
        return []
    rejected = []
    for s in list_snapshots(home):
        path = Path(s["path"])
        try:
            pinned_for = (path / PINNED).read_text().strip()
        except OSError:
            pinned_for = ""
        if s["manifest"].get("reason") == REJECTED and pinned_for in (REJECTED, ""):
            rejected.append(path)
    return rejected[:-keep] if keep > 0 else rejected


def prune_rejected(home: Home, keep: int | None) -> list[Path]:
    """Retire the rejected candidates beyond ``keep``; each job's job.json records ``gate_snapshot_pruned`` first,
    so the checkers know the candidate went by policy, not by accident. A failure is logged, never raised."""
    removed = []
    try:
        for p in prunable_rejected(home, keep):
            retire_rejected(home, p)
            removed.append(p)
            log.info("pruned rejected candidate %s (keep_rejected %s)", p.name, keep)
    except Exception as e:  # noqa: BLE001 - housekeeping: the job is done and nothing live depends on it
        log.error("pruning rejected candidates failed: %s", e)
    return removed


def retire_rejected(home: Home, path: Path) -> None:
    """Retire one rejected candidate, its job's job.json saying so first (``gate_snapshot_pruned``)."""
    from trainingd.contracts.job import now_iso, write_job

    job_id = ((read_lineage_manifest(path) or {}).get("trained_file") or {}).get("job_id")
    meta, _ = read_job(home.done / job_id) if job_id else (None, None)
    if meta is not None:
        write_job(home.done / job_id, {**meta, "gate_snapshot_pruned": {"name": path.name, "at": now_iso()}})
    retire_folder(path)


def prune_snapshots(home: Home, keep: int) -> list[Path]:
    removed = prunable_snapshots(home, keep)
    for p in removed:
        retire_folder(p)
        log.info("pruned snapshot %s (keep_snapshots %d)", p.name, keep)
    return removed


def after_job(home: Home, job: Any, result: dict | None, config: dict, keep: int) -> Path | None:
    """The daemon's hook after ``queue.complete``: snapshot, then prune. A failure is logged, never raised."""
    try:
        from trainingd.lifecycle.home_guard import record_base_hash

        record_base_hash(home)  # the base's content hash goes into the adapter's state, and so into the snapshot
        path = take_snapshot(home, reason="job", job=job, result=result, config=config)
        prune_snapshots(home, keep)
        return path
    except Exception as e:  # noqa: BLE001 - a snapshot is a copy; the job is done and the adapter durable
        log.error("snapshot after job %s failed: %s (the adapter in current_model/ is fine)", job.id, e)
        return None


def set_pinned(home: Home, name: str, pinned: bool) -> Path:
    path = find_snapshot(home, name)
    if pinned:
        (path / PINNED).write_text("manual\n")
    else:
        (path / PINNED).unlink(missing_ok=True)
    fsync_dir(path)
    return path


# --------------------------------------------------------------------------------------------- lineage
def _done_results(home: Home) -> dict[str, dict]:
    out = {}
    if home.done.is_dir():
        for d in home.done.iterdir():
            meta, _ = read_job(d)
            if meta is not None and isinstance(meta.get("result"), dict):
                out[d.name] = meta["result"]
    return out


def lineage(home: Home) -> dict[str, Any]:
    """The chain from the base to the live adapter: each trained file in order, with its snapshot and losses."""
    try:
        state = read_adapter_state(home.current_model)
    except (ValueError, OSError):
        state = None
    snaps = list_snapshots(home)
    by_job: dict[str, dict] = {}
    for s in snaps:
        tf = s["manifest"].get("trained_file") or {}
        if tf.get("job_id"):
            by_job[tf["job_id"]] = s  # the newest snapshot of a job wins
    results = _done_results(home)
    chain = []
    for t in trained_entries(state, home.current_model):
        s = by_job.get(t.get("job_id"))
        m = s["manifest"] if s else {}
        r = results.get(t.get("job_id")) or {}
        chain.append({"generation": t.get("generation"), "job_id": t.get("job_id"), "file": t.get("file"),
                      "sha256": t.get("sha256"), "steps": t.get("steps"),
                      "final_loss": m.get("final_loss", r.get("loss")), "eval_loss": m.get("eval_loss",
                                                                                          r.get("eval_loss")),
                      "snapshot": s["name"] if s else None})
    state = state or {}
    in_chain = {c["job_id"] for c in chain}
    # Candidates the gate kept out of the live adapter (trained once, not in this chain): job, file, both scores.
    rejected = [{"job_id": (m.get("trained_file") or {}).get("job_id"),
                 "file": (m.get("trained_file") or {}).get("name"),
                 "snapshot": s["name"], "reason": (m.get("gate") or {}).get("reason"),
                 "champion": (m.get("gate") or {}).get("champion"), "candidate": (m.get("gate") or {}).get("candidate")}
                for s in snaps for m in [s["manifest"]]
                if m.get("reason") == REJECTED and (m.get("trained_file") or {}).get("job_id") not in in_chain]
    return {"base_model": state.get("base_model"), "base_model_hash": state.get("base_model_hash"),
            "generation": state.get("generation"), "generation_id": state.get("generation_id"),
            "restored_from": state.get("restored_from"), "adapter": str(home.current_model) if state else None,
            "chain": chain, "rejected": rejected, "snapshots": len(snaps)}


# --------------------------------------------------------------------------------------------- rollback
def quiet_reason(home: Home, *, allow_paused_job: bool = False) -> str | None:
    """Why the live adapter must not be replaced now (None: the daemon is stopped, or paused with no job)."""
    from trainingd.contracts.status import read_status
    from trainingd.instance import is_daemon_running

    if not is_daemon_running(home):
        return None
    status = read_status(home) or {}
    # A daemon held by a condition of the home (a changed locked key, a changed base) starts no job either.
    paused = bool((status.get("control") or {}).get("paused")) or bool(status.get("condition"))
    busy = home.processing.is_dir() and any(p.is_dir() and not p.name.startswith(".")
                                            for p in home.processing.iterdir())
    if not paused:
        return ("the daemon is running and not paused: pause it first (training_controller.py pause --wait) "
                "or stop it")
    if busy and not allow_paused_job:
        return ("the daemon is paused in the middle of a job, which would publish onto the adapter when resumed: "
                "stop the daemon first (training_controller.py stop --wait)")
    return None


def replace_adapter(home: Home, src: Path, state: dict) -> None:
    """Make the adapter files of ``src`` the live adapter, ``adapter_state.json`` last (as a publish does)."""
    publish_adapter(src, home.current_model, state)


def rollback(home: Home, name: str) -> dict[str, Any]:
    """Make snapshot ``name`` the live adapter. The adapter it replaces is snapshotted first; nothing is deleted.

    For dedupe (``trainingd.lifecycle.ancestry``) the files trained after that snapshot are no longer in the
    model: added again, they are trained again. Their jobs stay in done/, listed by the backup snapshot."""
    why = quiet_reason(home)
    if why:
        raise SnapshotError(f"rollback refused: {why}")
    src = find_snapshot(home, name)
    if not has_adapter(src):
        raise SnapshotError(f"snapshot {src.name} holds no adapter files")
    backup = take_snapshot(home, reason="rollback", label=f"before-rollback-to-{src.name[:15]}")
    state = read_adapter_state(src) or {}
    state = {**state, "restored_from": src.name, "updated_at": time.time()}
    replace_adapter(home, src, state)
    log.info("rolled the adapter back to snapshot %s (backup of the replaced one: %s)", src.name,
             backup.name if backup else "none, there was no adapter")
    return {"restored": src.name, "backup": backup.name if backup else None,
            "generation": state.get("generation"), "message":
            f"current_model/ now holds snapshot {src.name}"
            + (f"; the adapter it replaced is snapshot {backup.name}" if backup else "")}


def promote(home: Home, name: str) -> dict[str, Any]:
    """``trainingd promote SNAPSHOT``: publish a snapshot the gate rejected (or any snapshot) as the live adapter.

    The rollback machinery: the replaced adapter is snapshotted first, nothing is deleted. The promoted adapter's
    gate scores go beside it (they become the champion's), and a ``gate_reset`` history line ends the streak of
    rejections, so a daemon held as ``regressing`` starts jobs again.
    """
    from trainingd.atomic_ops import append_jsonl
    from trainingd.contracts.gate_scores import FILE as SCORES, read_gate_scores, write_gate_scores
    from trainingd.contracts.job import now_iso
    from trainingd.lifecycle.gate import STREAK_RESET

    why = quiet_reason(home)
    if why:
        raise SnapshotError(f"promote refused: {why}")
    src = find_snapshot(home, name)
    done = rollback(home, str(src))
    scores = read_gate_scores(src)
    if scores is not None:
        write_gate_scores(home.current_model, {k: v for k, v in scores.items() if k != "schema_version"})
    else:
        (home.current_model / SCORES).unlink(missing_ok=True)  # the next job scores the champion afresh
    job_id = ((read_lineage_manifest(src) or {}).get("trained_file") or {}).get("job_id")
    append_jsonl(home.history, {"kind": STREAK_RESET, "why": "promote", "snapshot": src.name, "job_id": job_id,
                                "at": now_iso()})
    return {**done, "promoted": src.name, "job_id": job_id,
            "message": f"promoted snapshot {src.name} to current_model/"
                       + (f"; the adapter it replaced is snapshot {done['backup']}" if done.get("backup") else "")}


def start_fresh_adapter(home: Home, *, reason: str = "adapter_new", label: str | None = None) -> dict[str, Any]:
    """Archive the live adapter as a pinned snapshot, then empty ``current_model/`` (its checkpoints go too).

    The next job trains a new adapter from the config (the way to change a locked key without consolidating).
    For dedupe the archived adapter is no ancestor of the fresh one: its files, added again, are trained again
    (a consolidated base below it still counts: its files stay duplicates).
    """
    why = quiet_reason(home)
    if why:
        raise SnapshotError(f"refused: {why}")
    backup = take_snapshot(home, reason=reason, label=label or "archived")
    cm = home.current_model
    if cm.exists():
        retire_folder(cm)
    cm.mkdir(parents=True, exist_ok=True)
    fsync_dir(cm.parent)
    return {"archived": backup.name if backup else None,
            "message": (f"the adapter is archived as snapshot {backup.name}; " if backup else
                        "there was no adapter; ") + "the next job starts a fresh adapter in current_model/"}


def format_lineage(doc: dict[str, Any]) -> str:
    if not doc.get("adapter"):
        return "no adapter yet: current_model/ is empty (the first job starts one)"
    h = (doc.get("base_model_hash") or "")[:12]
    lines = [f"base  {doc['base_model']}  (hash {h})"]
    fmt = lambda v: "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731 - a one-line formatter
    for i, c in enumerate(doc["chain"], 1):
        lines.append(f"  {i:>3}. gen {fmt(c['generation']):>3}  {c['job_id']}  {c['file']}  steps {fmt(c['steps'])}"
                     f"  loss {fmt(c['final_loss'])}  eval {fmt(c['eval_loss'])}  [{c['snapshot'] or 'no snapshot'}]")
    for r in doc.get("rejected") or []:
        metric = next((k for k in ("exact_match", "token_accuracy") if (r.get("candidate") or {}).get(k) is not None),
                      "exact_match")
        lines.append(f"  rejected  {r['job_id']}  {r['file']}  {metric} {fmt((r.get('candidate') or {}).get(metric))}"
                     f" vs champion {fmt((r.get('champion') or {}).get(metric))}  [{r['snapshot']}]")
    tail = f"current adapter: generation {doc['generation']}"
    if doc.get("restored_from"):
        tail += f" (restored from snapshot {doc['restored_from']})"
    lines.append(tail + f"; {doc['snapshots']} snapshot(s) under snapshots/")
    return "\n".join(lines)


def format_snapshots(items: list[dict[str, Any]]) -> str:
    if not items:
        return "no snapshots"
    rows = []
    for s in items:
        m = s["manifest"]
        tf = m.get("trained_file") or {}
        rows.append(f"{s['name']}  {'pinned ' if s['pinned'] else ''}{m.get('reason')}  gen {m.get('generation')}"
                    f"  {tf.get('name') or m.get('label') or ''}  loss {m.get('final_loss')}")
    return "\n".join(rows)


def format_json(doc: Any) -> str:
    return json.dumps(doc, indent=2)
