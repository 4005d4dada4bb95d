"""The invariants of a home (ARCHITECTURE.md), checked from its files alone; and the start-up sweep of temp files.

One checker for the fault tests, ``bench/chaos.py``, ``state_tracker.py --check`` and the health check::

    from trainingd.checks.invariants import check_home
    problems = check_home(Home.at(DIR), expect_files=["a.jsonl", "b.jsonl"])   # [] when all hold

``check_home`` reads only (stdlib; the adapter comparison needs numpy and safetensors, imported there). It is
meant for a home whose daemon is not running (``idle=True``, the default); with ``idle=False`` it skips what a
running daemon may legitimately have in flight (one job in processing/, a temp file being written).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from trainingd.contracts.adapter_state import read_adapter_state, trained_entries
from trainingd.contracts.checkpoint import ADAPTER_WEIGHTS
from trainingd.contracts.job import FILE as JOB_FILE
from trainingd.contracts.reason import read_reason
from trainingd.contracts.status import load_status
from trainingd.jobqueue import job_number, queue_lock
from trainingd.lifecycle.ancestry import ever_trained_ids, model_trained
from trainingd.paths import PRIORITIES, Home

log = logging.getLogger(__name__)

CHECKPOINT_TEMP_PREFIXES = (".tmp-step-", ".old-step-", ".retired-")
TEMP_MIN_AGE_S = 60.0


def is_temp_name(name: str) -> bool:
    """A name only a half-done write leaves: atomic-write temps, partial copies, checkpoint leftovers."""
    return name.startswith(".") and (name.endswith((".tmp", ".part")) or name.startswith(CHECKPOINT_TEMP_PREFIXES)
                                     or name.startswith(".trainingd-convert-"))


def _children(folder: Path, *, follow: bool = False) -> list[Path]:
    """The entries of ``folder``; none when it is not a real folder (a link is never followed, unless ``follow``:
    the home's root may be a link) or cannot be read (a looping link, no permission)."""
    try:
        if not follow and not stat.S_ISDIR(os.lstat(folder).st_mode):
            return []
        return [Path(e.path) for e in os.scandir(folder)]
    except OSError:
        return []


def temp_files(home: Home) -> list[Path]:
    """Every temp file or folder a crash can leave in the parts of a home the daemon and trainer write."""
    found: list[Path] = []
    flat = [home.root, home.inbox, home.status_dir, home.control, home.control_requests, home.current_model,
            home.current_model / "optimizer",  # the AdamW state the "stream" policy carries (train/stream.py)
            home.queue, home.processing, home.done, home.failed, *(home.pending(p) for p in PRIORITIES)]
    seen: set[Path] = set()
    for folder in flat:
        if folder in seen:
            continue
        seen.add(folder)
        for p in _children(folder, follow=folder == home.root):
            if is_temp_name(p.name):
                found.append(p)
            elif folder in (home.processing, home.done, home.failed) or folder.parent == home.pending_root:
                found += [q for q in _children(p) if is_temp_name(q.name)]  # inside a job folder (never a link)
    for p in _children(home.checkpoints):
        if is_temp_name(p.name):
            found.append(p)
        else:
            found += [q for q in _children(p) if is_temp_name(q.name)]
    for folder in (home.snapshots, home.consolidated_models):  # a copy or merge not yet renamed into place
        found += [p for p in _children(folder) if p.name.startswith((".tmp-", ".retired-"))]
    found += _children(home.incoming)  # an add a crash interrupted
    return sorted(set(found))


def sweep_temp_files(home: Home, min_age_s: float = TEMP_MIN_AGE_S) -> list[Path]:
    """Remove what killed writes left. Run by a daemon at start-up, after it has ended any orphan trainer.

    Folders only the daemon and its trainer write (status/, current_model/, processing/, checkpoints) are swept
    whole, and so are job folders (job.json is written only under queue/.lock, held here); elsewhere (control/
    requests, the inbox, the home's root) only temps older than ``min_age_s``, so a command line writing at
    this moment is never robbed. queue/.incoming/ is left to
    ``JobQueue.recover_incoming``, which runs before this.
    """
    with queue_lock(home):  # job.json and the job counter are written only under this lock: their temps are ours
        return _sweep(home, min_age_s)


def _sweep(home: Home, min_age_s: float) -> list[Path]:
    own = (home.status_dir, home.current_model, home.checkpoints)
    states = (home.processing, home.done, home.failed, *(home.pending(p) for p in PRIORITIES))
    now = time.time()
    removed = []
    for p in temp_files(home):
        if p.parent in (home.incoming, home.consolidated_models):
            continue  # an add is finished by the intake; a merge may still be running (consolidation cleans up)
        mine = (any(p.parent == d or p.parent.parent == d for d in own) or p.parent.parent in states
                or p.name.startswith(f".{home.trainer_command.name}.")
                # written only by a daemon of this home (the pid under the lock we hold; config.json by init_home)
                or (p.parent == home.root and p.name.startswith((f".{home.pid.name}.", f".{home.config.name}.",
                                                                f".{home.trainer_record.name}.")))
                or (p.parent == home.job_counter.parent and p.name.startswith(f".{home.job_counter.name}.")))
        try:
            if not mine and now - p.lstat().st_mtime < min_age_s:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("could not remove %s, left by an interrupted write: %s", p, e)
            continue
        removed.append(p)
        log.info("removed %s, left by an interrupted write", p.relative_to(home.root))
    return removed


def job_locations(home: Home) -> dict[str, list[str]]:
    """job id -> every state folder holding it (``pending/high``, ``processing``, ...)."""
    where: dict[str, list[str]] = defaultdict(list)
    folders = [(f"pending/{p}", home.pending(p)) for p in PRIORITIES]
    folders += [("processing", home.processing), ("done", home.done), ("failed", home.failed)]
    for label, folder in folders:
        for p in _children(folder):
            # Only job folders: a link (never followed) or an entry not named like a job is not a job.
            if not p.is_symlink() and p.is_dir() and job_number(p.name) >= 0:
                where[p.name].append(label)
    return dict(where)


def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse)


def _refuse(token: str):
    raise ValueError(f"{token} is not JSON")


# job id -> (its state folder's label, its folder, its job.json; {} when unreadable)
Jobs = dict[str, tuple[str, Path, dict]]


def check_home(home: Home, *, expect_files: Iterable[str] | None = None, idle: bool = True,
               require_status: bool = True) -> list[str]:
    """Every broken invariant of ``home`` as a sentence; [] when all hold.

    ``expect_files``: original names of files that were accepted; each must be in done/ exactly once, or in
    failed/ with a reason.
    """
    jobs, problems = _read_jobs(home)
    problems += _check_processing(home, jobs, idle)
    trained_ids, found = _check_adapter(home, jobs, idle)
    problems += found
    problems += _check_done_jobs(home, jobs, trained_ids)
    if expect_files is not None:
        problems += _check_expected_files(jobs, expect_files)
    if idle:
        problems += _check_leftovers(home, require_status)
    return problems


def _read_jobs(home: Home) -> tuple[Jobs, list[str]]:
    """Every job folder with its job.json, and what is wrong with each: in several state folders (invariant 1),
    its data file missing, or failed without a reason (invariant 7)."""
    problems: list[str] = []
    jobs: Jobs = {}
    for job_id, places in sorted(job_locations(home).items()):
        if len(places) > 1:
            problems.append(f"job {job_id} is in {len(places)} state folders: {', '.join(places)}")
        state = places[0]
        folder = home.queue / state / job_id
        try:
            meta = _read_json(folder / JOB_FILE)
        except (OSError, ValueError) as e:
            problems.append(f"job {job_id} ({state}): job.json unreadable: {e}")
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        jobs[job_id] = (state, folder, meta)
        data = meta.get("file")
        if data and not meta.get("rejected") and not (folder / data).is_file():
            problems.append(f"job {job_id} ({state}): its data file {data!r} is missing")
        if state == "failed":
            if not read_reason(folder):
                problems.append(f"job {job_id} is in failed/ without a reason.txt")
    return jobs, problems


def _check_processing(home: Home, jobs: Jobs, idle: bool) -> list[str]:
    """At most one job in processing/ (invariant 3); with no daemon running, none, and no add half done."""
    problems: list[str] = []
    processing = [j for j, (s, _, _) in jobs.items() if s == "processing"]
    if len(processing) > 1:
        problems.append(f"{len(processing)} jobs in processing/ ({', '.join(processing)}); at most one may be")
    if idle and processing:
        problems.append(f"job(s) {', '.join(processing)} still in processing/ with no daemon running")
    incoming = _children(home.incoming)
    if idle and incoming:
        problems.append(f"queue/.incoming/ holds {len(incoming)} unfinished add(s): "
                        + ", ".join(p.name for p in incoming))
    return problems


def _check_adapter(home: Home, jobs: Jobs, idle: bool) -> tuple[set, list[str]]:
    """(the job ids trained into the adapter, what is wrong): each job trained into it at most once and done
    (invariant 4), each content at most once in the live model (invariant 11)."""
    problems: list[str] = []
    trained: list[dict] = []
    try:
        trained = trained_entries(read_adapter_state(home.current_model), home.current_model)
    except (OSError, ValueError, AttributeError) as e:
        problems.append(f"current_model/adapter_state.json unreadable: {e}")
    for job_id, n in Counter(t.get("job_id") for t in trained).items():
        if n > 1:
            problems.append(f"job {job_id} is listed {n} times as trained in adapter_state.json")
    # Invariant 11: each content at most once in the live model (its adapter and the consolidated bases below it).
    forced = {j for j, (_, _, m) in jobs.items() if m.get("force")}
    in_model = model_trained(home)
    for sha, n in Counter(t.get("sha256") for t in in_model if t.get("job_id") not in forced).items():
        if sha and n > 1:
            where = sorted({t["where"] for t in in_model if t.get("sha256") == sha})
            problems.append(f"content {sha[:12]} was trained {n} times into the live model ({', '.join(where)}: "
                            "duplicate training)")
    trained_ids = {t.get("job_id") for t in trained}
    for job_id in trained_ids:
        state = jobs.get(job_id, ("missing",))[0]
        if state != "done" and not (state == "processing" and not idle):
            problems.append(f"job {job_id} is trained into the adapter but is {state}, not done")
    return trained_ids, problems


def _check_done_jobs(home: Home, jobs: Jobs, trained_ids: set) -> list[str]:
    """A done job was trained into some adapter of the home's life: the live one, a snapshot (rolled back from,
    archived by `adapter new`) or a consolidated base; a job the gate rejected is kept by a rejected snapshot.
    Its checkpoints are gone."""
    problems: list[str] = []
    recorded = None
    rejected = _rejected_snapshots(home)
    for job_id, (state, _folder, meta) in jobs.items():
        if state != "done" or meta.get("duplicate_of") or not meta.get("sha256"):
            continue
        if meta.get("gate_outcome") == "rejected":
            # Trained once, not published (invariant 12): its candidate must be kept. Promoted by hand later, it
            # is in the adapter as well, which is fine.
            if job_id not in trained_ids and job_id not in rejected and not meta.get("gate_snapshot_pruned"):
                problems.append(f"job {job_id} was rejected by the gate but no snapshot marked rejected keeps its "
                                "candidate (snapshots/*-rejected)")
        elif job_id not in trained_ids:
            recorded = ever_trained_ids(home) if recorded is None else recorded
            if job_id not in recorded:
                problems.append(f"job {job_id} is in done/ but no adapter, snapshot or consolidated base lists it "
                                "as trained")
        if (home.job_checkpoints(job_id)).exists():
            problems.append(f"job {job_id} is done but its checkpoints are still in "
                            f"current_model/checkpoints/{job_id}/")
    return problems


def _check_expected_files(jobs: Jobs, expect_files: Iterable[str]) -> list[str]:
    """Every accepted file: done exactly once, or failed with a reason."""
    problems: list[str] = []
    by_name: dict[str, list[str]] = defaultdict(list)
    for job_id, (state, _, meta) in jobs.items():
        by_name[meta.get("original_name") or meta.get("file") or job_id].append(state)
    for name in expect_files:
        states = by_name.get(name, [])
        done = states.count("done")
        if not states:
            problems.append(f"{name}: lost (in no state folder)")
        elif done > 1:
            problems.append(f"{name}: in done/ {done} times")
        elif done == 0 and "failed" not in states:
            problems.append(f"{name}: not finished ({', '.join(states)})")
    return problems


def _check_leftovers(home: Home, require_status: bool) -> list[str]:
    """What a home with no daemon running must not hold: temp files (a running one may be writing them), and a
    status document that is not schema 1."""
    problems = [f"temp file left behind: {p.relative_to(home.root)}" for p in temp_files(home)]
    try:
        if load_status(home).get("schema_version") != 1:
            problems.append("status/training_status.json is not a schema-1 status document")
    except FileNotFoundError:
        if require_status:
            problems.append("status/training_status.json is missing")
    except (OSError, ValueError) as e:
        problems.append(f"status/training_status.json does not parse: {e}")
    return problems


def _rejected_snapshots(home: Home) -> set[str]:
    """Job ids whose candidate the gate rejected and a snapshot keeps (``reason: rejected`` in its manifest)."""
    from trainingd.contracts.lineage_manifest import read_lineage_manifest

    out: set[str] = set()
    for folder in _children(home.snapshots) if home.snapshots.is_dir() else []:
        m = read_lineage_manifest(folder) if folder.is_dir() and not folder.name.startswith(".") else None
        if m and m.get("reason") == "rejected" and (m.get("trained_file") or {}).get("job_id"):
            out.add(m["trained_file"]["job_id"])
    return out


def adapter_difference(a: Path, b: Path) -> float:
    """The largest absolute difference between two adapters' tensors (``adapter_model.safetensors`` files or
    folders holding one); raises ValueError when their tensor names or shapes differ."""
    import numpy as np
    from safetensors.numpy import load_file

    def load(p: Path) -> dict:
        p = Path(p)
        return load_file(str(p / ADAPTER_WEIGHTS if p.is_dir() else p))

    ta, tb = load(a), load(b)
    if ta.keys() != tb.keys():
        raise ValueError(f"the adapters hold different tensors: {sorted(ta.keys() ^ tb.keys())[:5]}")
    worst = 0.0
    for k in ta:
        if ta[k].shape != tb[k].shape:
            raise ValueError(f"tensor {k}: shape {ta[k].shape} vs {tb[k].shape}")
        if ta[k].size:
            worst = max(worst, float(np.max(np.abs(ta[k].astype(np.float64) - tb[k].astype(np.float64)))))
    return worst


__all__ = ["check_home", "temp_files", "sweep_temp_files", "job_locations", "adapter_difference", "is_temp_name"]
