"""The job queue: job states as folders, stdlib only. The only code that moves job files.

A job is a folder ``queue/<state>/<job_id>/`` (pending jobs sit one level deeper, under their priority:
``queue/pending/<priority>/<job_id>/``) holding the data file under its original name and ``job.json``;
a failed job also holds ``reason.txt``. Every transition is one ``rename`` of the whole folder
(``atomic_ops.durable_rename``), so the file, its metadata and its reason always move together. The
folders are the truth: a job's state is where its folder is; ``job.json["state"]`` is a copy for readers.

New jobs are assembled in ``queue/.incoming/<job_id>/`` and renamed into ``pending/`` when complete;
``recover_incoming()`` finishes (or discards) what a crash left there. An add holds a shared flock on
``queue/.incoming.lock`` while it assembles, and ``recover_incoming()`` takes it exclusively, so a daemon
starting never "recovers" an add that is still in progress. Mutations hold an flock on ``queue/.lock`` so
the daemon and the CLI never interleave a metadata write with a move.

A ``job.json`` that cannot be read (a hand edit gone wrong) does not stop anything: the job is loaded
with ``meta["broken"]`` saying why, ``list`` shows it, the daemon fails it with that reason, and the
unreadable file is kept as ``job.json.broken`` when the job's metadata is next written. The file's schema and
its reader and writer are in ``trainingd.contracts.job``.

    from trainingd.paths import Home
    from trainingd.jobqueue import JobQueue
    q = JobQueue(Home.at("/srv/trainingd")); q.ensure_dirs()
    job = q.add(Path("data.jsonl"), priority="high")     # copy (CLI); move=True for the inbox
    job = q.claim_next()                                  # pending -> processing
    q.complete(job, result={...})                         # processing -> done
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from trainingd.atomic_ops import atomic_write_text, durable_rename, file_sha256, fsync_dir
from trainingd.contracts import hashes
from trainingd.contracts import result as result_contract
from trainingd.contracts.job import FILE as JOB_FILE
from trainingd.contracts.job import keep_broken, now_iso, read_job, write_job
from trainingd.contracts.reason import FILE as REASON_FILE
from trainingd.contracts.reason import write_reason
from trainingd.faults import fault_point
from trainingd.paths import JOB_STATES, PRIORITIES, Home

log = logging.getLogger(__name__)

SOURCES = ("inbox", "cli", "generator")
INCOMING_WAIT_LOG_S = 5.0
_ID_RE = re.compile(r"^(\d{6,})-")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
# (from, to) -> the fault points before and after a transition's rename (trainingd.faults)
_POINTS = {("pending", "processing"): ("claim", "claimed"), ("processing", "done"): ("complete", "completed"),
           ("processing", "pending"): ("requeue", "requeued"), ("failed", "pending"): ("retry", "retried")}


class QueueError(Exception):
    """A queue operation that cannot be done; the message is meant for the person at the CLI."""


def safe_stem(name: str) -> str:
    """The part of a job id made from the file name: ``[A-Za-z0-9._-]`` only, at most 40 characters."""
    stem = Path(name).stem if name.endswith(".jsonl") else name
    stem = _UNSAFE.sub("_", stem)[:40]
    return stem or "file"


def job_number(job_id: str) -> int:
    """The counter part of a job id (``000012-chat`` -> 12)."""
    m = _ID_RE.match(job_id)
    return int(m.group(1)) if m else -1


@dataclass
class Job:
    id: str
    state: str
    priority: str
    dir: Path
    meta: dict

    @property
    def data_file(self) -> Path:
        return self.dir / self.meta["file"]

    @property
    def number(self) -> int:
        return job_number(self.id)


@contextlib.contextmanager
def _flocked(path: Path, acquire: Callable[[int], None]) -> Iterator[None]:
    """Hold an flock on ``path`` (created if missing), taken by ``acquire(fd)``, for the ``with`` body."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        acquire(fd)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _exclusive(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_EX)


def _shared(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_SH)


def _exclusive_saying_why(fd: int) -> None:
    """Take the lock exclusively, logging every few seconds what it waits for."""
    waited = 0.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if waited % INCOMING_WAIT_LOG_S < 0.05:
                log.info("waiting for a job being added (training_queue.py add) to finish")
            time.sleep(0.05)
            waited += 0.05


def queue_lock(home: Home) -> contextlib.AbstractContextManager[None]:
    """Serialise queue mutations between processes (daemon, CLI, the start-up sweep) with an flock on queue/.lock."""
    return _flocked(home.queue_lock, _exclusive)


class JobQueue:
    """Jobs as folders under ``home.queue``; see the module docstring."""

    def __init__(self, home: Home):
        self.home = home

    # ----------------------------------------------------------------------------------------- layout
    @property
    def incoming(self) -> Path:
        return self.home.incoming

    def ensure_dirs(self) -> None:
        for p in PRIORITIES:
            self.home.pending(p).mkdir(parents=True, exist_ok=True)
        for d in (self.home.processing, self.home.done, self.home.failed, self.incoming):
            d.mkdir(parents=True, exist_ok=True)

    def _state_dirs(self, state: str) -> list[tuple[str, Path]]:
        """(priority or "", folder) pairs holding the jobs of ``state``."""
        if state == "pending":
            return [(p, self.home.pending(p)) for p in PRIORITIES]
        if state not in JOB_STATES:
            raise QueueError(f"unknown job state {state!r}; expected one of {', '.join(JOB_STATES)}")
        return [("", self.home.queue / state)]

    def _assembling(self, exclusive: bool = False) -> contextlib.AbstractContextManager[None]:
        """Shared while an add assembles in .incoming/; exclusive while recover_incoming() looks there."""
        return _flocked(self.home.incoming_lock, _exclusive_saying_why if exclusive else _shared)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return queue_lock(self.home)

    def _next_id(self, name: str) -> str:
        """Allocate a job id; numbers come from a counter file and are never reused."""
        with self._locked():
            try:
                n = int(self.home.job_counter.read_text().strip() or 1)
            except (FileNotFoundError, ValueError):
                n = 1
            # A lost or damaged counter must still never hand out a number already used.
            n = max(n, self._max_number_on_disk() + 1)
            atomic_write_text(self.home.job_counter, f"{n + 1}\n")
        return f"{n:06d}-{safe_stem(name)}"

    def _reserve_numbers_on_disk(self) -> None:
        with self._locked():
            try:
                n = int(self.home.job_counter.read_text().strip() or 1)
            except (FileNotFoundError, ValueError):
                n = 1
            top = self._max_number_on_disk()
            if n <= top:
                atomic_write_text(self.home.job_counter, f"{top + 1}\n")

    def _max_number_on_disk(self) -> int:
        best = 0
        folders = [self.incoming] + [d for s in JOB_STATES for _, d in self._state_dirs(s)]
        for folder in folders:
            if folder.is_dir():
                for entry in os.scandir(folder):
                    best = max(best, job_number(entry.name))
        return best

    # ----------------------------------------------------------------------------------------- reading
    def _load(self, state: str, priority: str, job_dir: Path) -> Job:
        meta, broken = read_job(job_dir)
        if meta is None:
            # Missing (an old crash) or unreadable (a hand edit): rebuilt from the folder, so the job stays visible.
            name = _guess_data_file(job_dir)
            meta = {"id": job_dir.name, "file": name, "original_name": name, "priority": priority or "normal",
                    "attempts": 0}
            if broken is not None:
                meta["broken"] = broken
        meta["state"] = state  # the folder is the truth
        prio = priority or meta.get("priority") or "normal"
        if prio not in PRIORITIES:
            prio = "normal"
        return Job(id=job_dir.name, state=state, priority=prio, dir=job_dir, meta=meta)

    def _entries(self, state: str) -> list[tuple[str, Path, str]]:
        """(priority or "", folder, job id) of every job of ``state``, in claim order; no job.json is read.

        No Path per job: done/ grows by one folder per job for ever, and a page needs only its own paths.
        """
        out = []
        for prio, folder in self._state_dirs(state):
            if not folder.is_dir():
                continue
            # A link is never a job: following it would read (and move) what lies outside the home.
            names = sorted((e.name for e in os.scandir(folder)
                            if e.is_dir(follow_symlinks=False) and _ID_RE.match(e.name)),
                           key=lambda n: (job_number(n), n))
            out += [(prio, folder, n) for n in names]
        return out

    def _iter_state(self, state: str) -> list[Job]:
        return [self._load(state, prio, folder / n) for prio, folder, n in self._entries(state)]

    def page(self, state: str, offset: int = 0, limit: int = 50, newest_first: bool = False) -> tuple[int, list[Job]]:
        """``(total, jobs)``: one page of the jobs of ``state``, reading only that page's job.json files.

        A home that has run for weeks holds thousands of finished jobs; listing them is a scandir, loading
        them is not.
        """
        entries = self._entries(state)
        if newest_first:
            entries.reverse()
        offset, limit = max(0, offset), max(0, limit)
        return len(entries), [self._load(state, prio, folder / n)
                              for prio, folder, n in entries[offset:offset + limit]]

    def jobs(self, states: Iterable[str] | None = None) -> list[Job]:
        """Jobs in ``states`` (all by default): pending in claim order first, then the others by number."""
        states = list(states) if states is not None else list(JOB_STATES)
        out = []
        for state in JOB_STATES:
            if state in states:
                out += self._iter_state(state)
        for s in states:
            if s not in JOB_STATES:
                raise QueueError(f"unknown job state {s!r}; expected one of {', '.join(JOB_STATES)}")
        return out

    def get(self, job_id: str) -> Job:
        """Find a job by its id, or by its number alone (``12`` or ``000012``)."""
        job_id = str(job_id).strip()
        for state in JOB_STATES:
            for prio, folder in self._state_dirs(state):
                if (folder / job_id).is_dir() and _ID_RE.match(job_id):
                    return self._load(state, prio, folder / job_id)
        if job_id.isdigit():
            matches = [j for j in self.jobs() if j.number == int(job_id)]
            if len(matches) == 1:
                return matches[0]
        raise QueueError(f"no job {job_id!r} in the queue (see `training_queue.py list`)")

    def counts(self) -> dict:
        def n(folder: Path) -> int:
            if not folder.is_dir():
                return 0
            return sum(1 for e in os.scandir(folder) if e.is_dir(follow_symlinks=False) and _ID_RE.match(e.name))

        return {
            "pending": {p: n(self.home.pending(p)) for p in PRIORITIES},
            "processing": n(self.home.processing),
            "done": n(self.home.done),
            "failed": n(self.home.failed),
        }

    # ----------------------------------------------------------------------------------------- adding
    def add(self, src: Path, *, priority: str = "normal", source: str = "cli", force: bool = False,
            move: bool = False) -> Job:
        """Enqueue ``src`` as a new pending job: copied (the CLI) or moved (the inbox), then hashed.

        ``src`` must be a regular file (a symlink is refused: its target may change or vanish).
        """
        src = Path(src)
        if priority not in PRIORITIES:
            raise QueueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
        if source not in SOURCES:
            raise QueueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
        if src.is_symlink():
            raise QueueError(f"{src} is a symlink; copy the file itself")
        if not src.exists():
            raise QueueError(f"{src}: no such file")
        if not src.is_file():
            raise QueueError(f"{src} is not a regular file")
        self.ensure_dirs()
        with self._assembling():
            return self._assemble(src, priority=priority, source=source, force=force, move=move)

    def _assemble(self, src: Path, *, priority: str, source: str, force: bool, move: bool) -> Job:
        job_id = self._next_id(src.name)
        work = self.incoming / job_id
        work.mkdir()
        dst = work / src.name
        if move:
            _move_file(src, dst)
        else:
            part = work / f".{src.name}.part"
            _copy_no_wider(src, part)
            os.rename(part, dst)  # the final name appears only once the copy is complete
        fsync_dir(work)
        fault_point("intake")
        try:
            meta = self._new_meta(job_id, dst, priority=priority, source=source, force=force)
        except OSError as e:
            if not move:
                shutil.rmtree(work, ignore_errors=True)  # a copy: the source is still there
                raise QueueError(f"cannot read {src}: {e}") from None
            # The file is already ours: keep it, as a failed job with the reason.
            reason = f"cannot read {src.name}: {e}"
            meta = {**self._new_meta(job_id, dst, priority=priority, source=source, force=force, hash_file=False),
                    "state": "failed", "finished_at": now_iso(), "reason": reason, "rejected": True}
            write_reason(work, reason)
            write_job(work, meta)
            durable_rename(work, self.home.failed / job_id)
            return self._load("failed", "", self.home.failed / job_id)
        write_job(work, meta)
        fault_point("intake_publish")
        job = self._publish(work, meta)
        log.info("job %s added from %s (%s, priority %s, sha256 %s)", job.id, source, src.name, priority,
                 meta["sha256"][:12])
        return job

    def reject(self, src: Path, reason: str, *, source: str = "inbox", name: str | None = None) -> Job:
        """Move something that must not be trained (a symlink, a folder, a wrong name) into failed/.

        Nothing is lost: the item itself (a symlink as a link, never followed) lands in the job folder, under
        ``name`` when given (e.g. a printable name for one that is not valid UTF-8).
        """
        src = Path(src)
        self.ensure_dirs()
        with self._assembling():
            return self._assemble_rejected(src, reason, source=source, name=name or src.name)

    def _assemble_rejected(self, src: Path, reason: str, *, source: str, name: str) -> Job:
        job_id = self._next_id(name)
        work = self.incoming / job_id
        work.mkdir()
        dst = work / name
        _move_file(src, dst)
        fsync_dir(work)
        fault_point("intake")
        meta = {
            **self._new_meta(job_id, dst, priority="normal", source=source, force=False, hash_file=False),
            "state": "failed", "finished_at": now_iso(), "reason": reason, "rejected": True,
        }
        write_reason(work, reason)
        write_job(work, meta)
        durable_rename(work, self.home.failed / job_id)
        log.warning("job %s: %s rejected: %s", job_id, name, reason)
        return self._load("failed", "", self.home.failed / job_id)

    def _new_meta(self, job_id: str, data: Path, *, priority: str, source: str, force: bool,
                  hash_file: bool = True) -> dict[str, Any]:
        regular = data.is_file() and not data.is_symlink()
        return {
            "id": job_id,
            "original_name": data.name,
            "file": data.name,
            "sha256": file_sha256(data) if hash_file and regular else None,
            "size_bytes": data.lstat().st_size if regular else None,
            "priority": priority,
            "source": source,
            "force": bool(force),
            "attempts": 0,
            "enqueued_at": now_iso(),
            "claimed_at": None,
            "finished_at": None,
            "state": "pending",
            "duplicate_of": None,
            "reason": None,
            "result": None,
        }

    def _publish(self, work: Path, meta: dict) -> Job:
        """The last step of an add: the assembled folder becomes a pending job in one rename."""
        dst = self.home.pending(meta["priority"]) / work.name
        durable_rename(work, dst)
        if meta.get("sha256"):
            hashes.append_hash(self.home, meta)
        return self._load("pending", meta["priority"], dst)

    def recover_incoming(self) -> list[Job]:
        """Finish or discard adds a crash interrupted (run at daemon start, before anything else).

        A folder holding its data file becomes a pending job (job.json rebuilt if missing); a folder
        without one (the move never happened, or only a partial copy) is removed -- its source is
        still where it was.
        """
        if not self.incoming.is_dir():
            return []
        with self._assembling(exclusive=True):  # an add still assembling is waited for, never "recovered"
            return self._recover_incoming()

    def _recover_incoming(self) -> list[Job]:
        out: list[Job] = []
        self._reserve_numbers_on_disk()  # a discarded leftover's number must not be handed out again
        for work in sorted(self.incoming.iterdir()):
            if work.is_symlink() or not work.is_dir():
                continue  # not an add of ours (a link is never followed out of the home)
            data = [p for p in work.iterdir() if p.name not in (JOB_FILE, REASON_FILE) and not p.name.startswith(".")]
            if not data:
                shutil.rmtree(work, ignore_errors=True)
                log.warning("removed an incomplete new job %s left by a crash (its source was not taken)", work.name)
                continue
            meta, _ = read_job(work)  # None when missing or torn by the crash: rebuilt below
            if meta is None or meta.get("file") != data[0].name:
                try:
                    meta = self._new_meta(work.name, data[0], priority="normal", source="inbox", force=False)
                except OSError as e:
                    # Unreadable: keep it (nothing is ever deleted) as a failed job a person can act on.
                    meta = {**self._new_meta(work.name, data[0], priority="normal", source="inbox", force=False,
                                             hash_file=False), "rejected": True,
                            "reason": f"cannot read {data[0].name}: {e}"}
                    write_reason(work, meta["reason"])
            for p in work.iterdir():
                if p.name.startswith(".") and not p.is_dir():
                    p.unlink(missing_ok=True)  # a partial copy beside the complete file
            if meta.get("rejected") or (work / REASON_FILE).exists():
                write_job(work, {**meta, "state": "failed"})
                durable_rename(work, self.home.failed / work.name)
                out.append(self._load("failed", "", self.home.failed / work.name))
            else:
                write_job(work, meta)
                out.append(self._publish(work, meta))
            log.warning("recovered job %s left in queue/.incoming by a crash -> %s", work.name, out[-1].state)
        return out

    # ----------------------------------------------------------------------------------------- transitions
    def _transition(self, job: Job, allowed_from: tuple[str, ...], to: str, *, priority: str | None = None,
                    reason: str | None = None, point: str | None = None, **meta: Any) -> Job:
        """The one transition function: check the start state, update job.json, move the folder in one rename."""
        with self._locked():
            current = self._find(job.id)
            if current is None:
                raise QueueError(f"no job {job.id!r} in the queue")
            if current.state not in allowed_from:
                raise QueueError(f"job {job.id} is {current.state}; cannot move it to {to} "
                                 f"(only from {' or '.join(allowed_from)})")
            if current.meta.get("broken"):
                keep_broken(current.dir)  # the hand-edited file a person may want to look at; rewritten below
            new_meta = {**current.meta, **meta, "state": to}
            if to == "pending":
                new_meta.pop("broken", None)  # a retry: the rebuilt job.json is good now
            if to != "failed":
                new_meta["reason"] = None
            if current.state == "failed" and to != "failed":
                # reason.txt belongs to failed jobs only; its text stays in job.json as previous_reason.
                new_meta["previous_reason"] = current.meta.get("reason")
            if reason is not None:
                new_meta["reason"] = reason
                write_reason(current.dir, reason)
            prio = priority or current.priority
            new_meta["priority"] = prio
            write_job(current.dir, new_meta)
            dst = self.home.pending(prio) / job.id if to == "pending" else self.home.queue / to / job.id
            before, after = (point, point + "d") if point else _POINTS.get((current.state, to), ("fail", "failed"))
            fault_point(before)
            durable_rename(current.dir, dst)
            if current.state == "failed" and to != "failed":
                # Only now: a failed job must never be seen without its reason, even after a crash.
                (dst / REASON_FILE).unlink(missing_ok=True)
            fault_point(after)
        log.info("job %s: %s -> %s%s", job.id, current.state, to, f" ({reason.splitlines()[0]})" if reason else "")
        return self._load(to, prio if to == "pending" else "", dst)

    def _find(self, job_id: str) -> Job | None:
        for state in JOB_STATES:
            for prio, folder in self._state_dirs(state):
                if (folder / job_id).is_dir():
                    return self._load(state, prio, folder / job_id)
        return None

    def claim_next(self) -> Job | None:
        """Move the next pending job (highest priority, then lowest number) to processing; None when empty."""
        for job in self._iter_state("pending"):
            try:
                return self._transition(job, ("pending",), "processing", claimed_at=now_iso(), finished_at=None)
            except (QueueError, FileNotFoundError):
                continue  # removed or claimed by someone else meanwhile: take the next one
        return None

    def complete(self, job: Job, **meta: Any) -> Job:
        return self._transition(job, ("processing",), "done", finished_at=now_iso(), **meta)

    def fail(self, job: Job, reason: str, **meta: Any) -> Job:
        return self._transition(job, ("pending", "processing"), "failed", reason=reason, finished_at=now_iso(),
                                **meta)

    def requeue(self, job: Job, **meta: Any) -> Job:
        """Back to pending under its priority; it keeps its number, so it is at the head of its queue."""
        return self._transition(job, ("processing",), "pending", claimed_at=None, **meta)

    def retry(self, job_id: str) -> Job:
        """A failed job goes back to pending with its attempts reset (its old reason kept as previous_reason)."""
        job = self.get(job_id)
        if job.state != "failed":
            raise QueueError(f"job {job.id} is {job.state}; only failed jobs can be retried")
        if job.meta.get("rejected") or not job.data_file.is_file() or job.data_file.is_symlink():
            raise QueueError(f"job {job.id} holds {job.meta.get('file')!r}, which is not a regular data file; "
                             f"copy a proper .jsonl file into inbox/ instead")
        return self._transition(job, ("failed",), "pending", attempts=0, finished_at=None, claimed_at=None,
                                duplicate_of=None)

    def remove(self, job_id: str) -> Job:
        """Take a pending job out of the queue: it moves to failed/ ("removed by user"); nothing is deleted."""
        job = self.get(job_id)
        if job.state == "processing":
            raise QueueError(f"job {job.id} is being trained; skip it instead (training_controller.py skip)")
        if job.state != "pending":
            raise QueueError(f"job {job.id} is {job.state}; only pending jobs can be removed")
        return self.fail(job, "removed by user", point="remove")

    def update_meta(self, job: Job, **meta: Any) -> Job:
        """Rewrite a job's job.json in place (no state change), e.g. to record an attempt."""
        with self._locked():
            current = self._find(job.id)
            if current is None:
                raise QueueError(f"no job {job.id!r} in the queue")
            current.meta.update(meta)
            write_job(current.dir, current.meta)
        return current


def _guess_data_file(job_dir: Path) -> str:
    for p in sorted(job_dir.iterdir()):
        if p.name not in (JOB_FILE, REASON_FILE, result_contract.FILE) and not p.name.startswith("."):
            return p.name
    return ""


def _copy_no_wider(src: Path, dst: Path) -> None:
    """Copy ``src`` into a new file ``dst``, durably, readable by no one the source was not readable by: the group
    and other bits of the source, narrowed further by the umask (the owner keeps read and write, so the daemon can
    hash the copy and retention can remove it). The source is opened without following a link."""
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd_in)
        if not stat.S_ISREG(st.st_mode):
            raise QueueError(f"{src} is not a regular file")
        mode = (stat.S_IMODE(st.st_mode) & 0o066) | 0o600  # os.open applies the umask on top
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        with open(fd_in, "rb", closefd=False) as inp, open(fd_out, "wb") as out:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    finally:
        os.close(fd_in)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _move_file(src: Path, dst: Path) -> None:
    """Move ``src`` (a file, a folder or a symlink itself) to ``dst``; copy+delete across filesystems."""
    try:
        os.rename(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        elif src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copyfile(src, dst)
            _fsync_file(dst)
        fsync_dir(dst.parent)
        if src.is_dir() and not src.is_symlink():
            shutil.rmtree(src)
        else:
            src.unlink()
    with contextlib.suppress(OSError):
        fsync_dir(Path(src).parent)


__all__ = ["Job", "JobQueue", "QueueError", "PRIORITIES", "SOURCES", "job_number", "safe_stem",
           "now_iso"]
