"""Inbox intake: turn complete ``inbox/*.jsonl`` files into pending jobs.

A watchdog ``Observer`` on ``inbox/`` (``PollingObserver`` if the native one cannot start) only sets a
flag and remembers names that arrived by a rename; the daemon calls ``Intake.poll()`` every tick, which
rescans the folder when the flag is set, when files await stability, or every ``rescan_interval_s``
(so no event is ever needed). A file is complete when it arrived by a rename (the producer wrote
``name.tmp`` and renamed it) or when its size and mtime have not changed for ``stable_seconds``.

Names starting with ``.`` or ending ``.tmp``/``.part`` are ignored. A complete ``*.json`` file holding a
JSON array of objects is converted to ``<stem>.jsonl`` beside it (written to a hidden temporary file,
fsynced, linked into place; the ``.json`` is removed only then) and queued. Anything else that must not be
trained (a symlink, a folder, a file ending neither ``.jsonl`` nor ``.json``, a ``.json`` that is not an
array of objects) becomes a failed job with a reason, so nothing dropped into the inbox is ever lost.

    intake = Intake(home, JobQueue(home), cfg); intake.start()
    while running: intake.poll(); ...
    intake.stop()
"""

from __future__ import annotations

import logging
import os
import shlex
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from trainingd.atomic_ops import fsync_dir
from trainingd.config import Config
from trainingd.daemon.containment import not_a_folder, printable
from trainingd.daemon.json_array import NotConvertible, convert
from trainingd.paths import Home
from trainingd.jobqueue import Job, JobQueue, QueueError

log = logging.getLogger(__name__)

SYMLINK_REASON = "symlink refused: copy the file into inbox/ instead"
FOLDER_REASON = "folder refused: drop .jsonl files into inbox/, not folders (move the files out of it and into inbox/)"
SUFFIX_REASON = ("not a .jsonl file: training data must be JSON Lines named *.jsonl (or a JSON array of records "
                 "named *.json); rename it and drop it into inbox/ again")
# Hidden, so scans ignore it; start() removes what a crash left.
CONVERT_PREFIX = ".trainingd-convert-"
UNREADABLE_REASON = "cannot read the file (permission denied): make it readable and drop it into inbox/ again"
SPECIAL_REASON = "not a regular file (device, socket or pipe) refused: drop regular .jsonl files into inbox/"
NAME_BYTES = 200  # a printable name stays well within the 255-byte limit of a file name


def undecodable_reason(printable_name: str) -> str:
    return (f"the file name is not valid UTF-8 (its bytes are shown as \\xNN: {printable_name}); it is kept in this "
            "folder under that printable name. Rename it to a UTF-8 name and drop it into inbox/ again, e.g. "
            f"mv {shlex.quote(printable_name)} NEW_NAME.jsonl && mv NEW_NAME.jsonl <home>/inbox/")


def printable_name(name: str) -> str:
    """``name`` with undecodable bytes as ``\\xNN``, shortened in the middle to at most NAME_BYTES bytes."""
    text = printable(name)
    if len(text.encode()) <= NAME_BYTES:
        return text
    head, tail = text[:NAME_BYTES // 2], text[-(NAME_BYTES // 4):]
    while len((head + "..." + tail).encode()) > NAME_BYTES:
        head = head[:-1]
    return head + "..." + tail


def is_ignored(name: str) -> bool:
    """Producers' work in progress: hidden names and ``.tmp``/``.part`` files are never touched."""
    return name.startswith(".") or name.endswith(".tmp") or name.endswith(".part")


class _Events:
    """What the watcher thread tells the main loop: a dirty flag and the names renamed into the inbox."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dirty = threading.Event()
        self.renamed_in: set[str] = set()

    def note(self, renamed_name: str | None = None) -> None:
        if renamed_name is not None:
            with self.lock:
                self.renamed_in.add(renamed_name)
        self.dirty.set()

    def take(self) -> set[str]:
        with self.lock:
            names, self.renamed_in = self.renamed_in, set()
        return names


def _make_handler(inbox: Path, events: _Events):
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        # Runs on the watcher thread: it only records; poll() on the main loop acts.
        def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog's event type
            renamed = None
            if event.event_type == "moved":
                dest = Path(os.fsdecode(event.dest_path))
                if dest.parent == inbox:
                    renamed = dest.name
            events.note(renamed)

    return Handler()


class Intake:
    """Watches one home's inbox and enqueues complete files; see the module docstring."""

    def __init__(self, home: Home, queue: JobQueue, cfg: Config, *, clock: Callable[[], float] = time.monotonic,
                 watch: bool = True):
        self.home = home
        self.queue = queue
        self.cfg = cfg
        self.clock = clock
        self.watch = watch
        self.events = _Events()
        self.observer = None
        self.observer_kind: str | None = None
        # name -> (size, mtime_ns, since): the signature seen and when it was first seen unchanged
        self._seen: dict[str, tuple[int, int, float]] = {}
        self._renamed: set[str] = set()
        self._last_scan: float | None = None
        self._unfinished_add = False  # an I/O error stopped an add half-way in queue/.incoming/
        self._watch_wanted = False  # start() found no inbox folder: the watcher starts once there is one
        self._watched: tuple[int, int] | None = None  # (st_dev, st_ino) of the inbox folder the watcher watches
        self._entry_errors: dict[str, str] = {}  # name -> the error last logged for it (logged once per change)

    # ------------------------------------------------------------------------------------ watcher
    def start(self) -> None:
        """Start the file watcher (native, else polling). Intake still works by rescans if both fail."""
        fault = not_a_folder(self.home, self.home.inbox, "no file is taken in until it is one")
        if fault is not None:
            log.error("%s; fix: %s", fault, fault.fix)
            self._watch_wanted = self.watch
            return
        self.home.inbox.mkdir(parents=True, exist_ok=True)
        for leftover in self.home.inbox.glob(f"{CONVERT_PREFIX}*.tmp"):
            log.info("inbox: removing %s, left by an interrupted .json conversion", leftover.name)
            leftover.unlink(missing_ok=True)
        if not self.watch:
            return
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        for kind, cls in (("native", Observer), ("polling", PollingObserver)):
            try:
                observer = cls(timeout=0.2) if kind == "polling" else cls()
                observer.schedule(_make_handler(self.home.inbox.resolve(), self.events), str(self.home.inbox),
                                  recursive=False)
                observer.daemon = True
                observer.start()
            except Exception as e:  # noqa: BLE001 - any watcher failure falls back to the next kind
                log.warning("inbox watcher (%s) could not start: %s", kind, e)
                continue
            self.observer, self.observer_kind = observer, kind
            st = os.stat(self.home.inbox)
            self._watched = (st.st_dev, st.st_ino)
            log.info("watching %s (%s watcher, rescan every %.1fs)", self.home.inbox, kind, self.cfg.rescan_interval_s)
            return
        log.warning("no inbox watcher; relying on rescans every %.1fs", self.cfg.rescan_interval_s)

    def stop(self) -> None:
        if self.observer is not None:
            try:
                self.observer.stop()
                self.observer.join(timeout=5)
            except Exception as e:  # noqa: BLE001 - shutting down: log and go on
                log.debug("stopping the inbox watcher: %s", e)
            self.observer = None

    # ------------------------------------------------------------------------------------ scanning
    def has_candidates(self) -> bool:
        """True while files in the inbox are waiting to become complete (``--once`` waits for them)."""
        return bool(self._seen) or self._unfinished_add

    def poll(self, *, force: bool = False) -> list[Job]:
        """Rescan the inbox if anything may have changed; returns the jobs created (claimed or failed)."""
        now = self.clock()
        if self._unfinished_add:
            # The file is ours already (moved out of the inbox): finish that add before anything else.
            recovered = self.queue.recover_incoming()  # an OSError again: the daemon backs off and comes back
            self._unfinished_add = False
            return recovered
        dirty = self.events.dirty.is_set()
        due = self._last_scan is None or now - self._last_scan >= self.cfg.rescan_interval_s
        if not (force or dirty or due or self._seen):
            return []
        self.events.dirty.clear()
        self._renamed |= self.events.take()
        self._last_scan = now
        return self._scan(now)

    def _scan(self, now: float) -> list[Job]:
        out: list[Job] = []
        present: set[str] = set()
        fault = not_a_folder(self.home, self.home.inbox, "no file is taken in until it is one")
        if fault is not None:
            raise fault  # never followed, replaced or removed: the daemon shows it and goes on without intake
        try:
            entries = list(os.scandir(self.home.inbox))
        except FileNotFoundError:
            try:
                self.home.inbox.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                pass  # something else took its place meanwhile: the next scan says what
            return out
        if self.observer is not None and self._watched is not None:
            st = os.stat(self.home.inbox)
            if (st.st_dev, st.st_ino) != self._watched:  # the folder was replaced: watch the new one
                log.info("inbox/ is a new folder; watching it")
                self.stop()
                self._watch_wanted = self.watch
        if self._watch_wanted:
            self._watch_wanted = False
            self.start()
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if is_ignored(name):
                continue
            present.add(name)
            try:
                job = self._consider(entry, now)
            except (OSError, QueueError) as e:
                # Vanished or busy: forget it and look again at the next scan.
                self._entry_error(name, f"could not take it yet: {e}")
                self._seen.pop(name, None)
                if isinstance(e, OSError) and any((self.home.queue / ".incoming").iterdir()):
                    self._unfinished_add = True  # e.g. a full disk after the move: finished at the next poll
                continue
            except Exception as e:  # noqa: BLE001 - one entry's fault never stops the others
                self._entry_error(name, f"internal error: {type(e).__name__}: {e}", exc=e)
                self._seen.pop(name, None)
                continue
            self._entry_errors.pop(name, None)
            if job is not None:
                out.append(job)
                self._seen.pop(name, None)
                self._renamed.discard(name)
        for name in list(self._seen):
            if name not in present:
                del self._seen[name]
        self._renamed &= present
        for name in list(self._entry_errors):
            if name not in present:
                del self._entry_errors[name]
        return out

    def _entry_error(self, name: str, message: str, exc: Exception | None = None) -> None:
        if self._entry_errors.get(name) == message:
            return
        self._entry_errors[name] = message
        log.warning("inbox: %s: %s", printable(name), printable(message), exc_info=exc)

    def _consider(self, entry: os.DirEntry, now: float) -> Job | None:
        name = entry.name
        path = Path(entry.path)
        st = os.lstat(path)
        kept = printable_name(name) if printable(name) != name else None  # what is stored for an undecodable name
        if stat.S_ISLNK(st.st_mode):
            return self.queue.reject(path, SYMLINK_REASON, source="inbox", name=kept)
        signature = (st.st_size, st.st_mtime_ns)
        previous = self._seen.get(name)
        if previous is None or previous[:2] != signature:
            self._seen[name] = (*signature, now)
            stable = False
        else:
            stable = now - previous[2] >= self.cfg.stable_seconds
        if stat.S_ISDIR(st.st_mode):
            return self.queue.reject(path, FOLDER_REASON, source="inbox", name=kept) if stable else None
        if not stat.S_ISREG(st.st_mode):
            return self.queue.reject(path, SPECIAL_REASON, source="inbox", name=kept)
        if not (stable or name in self._renamed):
            return None
        if kept is not None:
            # Not valid UTF-8: kept under a printable name, never queued for training (the trainer's command line,
            # the logs and job.json could not carry the name faithfully).
            return self.queue.reject(path, undecodable_reason(kept), source="inbox", name=kept)
        if not name.endswith((".jsonl", ".json")):
            return self.queue.reject(path, SUFFIX_REASON, source="inbox", name=kept)
        if not os.access(path, os.R_OK):
            return self.queue.reject(path, UNREADABLE_REASON, source="inbox", name=kept)
        if name.endswith(".json"):
            return self._convert(path)
        # Batches of the generator service go in at auto_generate.priority (see trainingd.daemon.autogen).
        priority = self.cfg.auto_generate.priority if name.startswith("syllo_autogen_") else "normal"
        return self.queue.add(path, priority=priority, source="inbox", move=True)

    def _convert(self, path: Path) -> Job:
        """A complete ``x.json``: converted to ``x.jsonl`` (or ``x-2.jsonl``... when taken) and queued, or
        refused into failed/ with how to convert it by hand. The .json goes only once the .jsonl is durable."""
        stem = path.name[:-len(".json")]
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=CONVERT_PREFIX, suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                records = convert(path, tmp)
            except NotConvertible as e:
                hint = f"jq -c '.[]' {shlex.quote(path.name)} > {shlex.quote(stem + '.jsonl')}"
                reason = (f"{path.name} {e}. A .json file in inbox/ must be one JSON array of objects; fix it, or "
                          f"convert it to JSON Lines yourself ({hint}) and drop the .jsonl into inbox/")
                return self.queue.reject(path, reason, source="inbox")
            target = self._link_free_name(tmp, stem)
        finally:
            tmp.unlink(missing_ok=True)
        path.unlink()
        fsync_dir(path.parent)
        log.info("inbox: converted %s (%d records) to %s", path.name, records, target.name)
        job = self.queue.add(target, priority="normal", source="inbox", move=True)
        return self.queue.update_meta(job, converted_from=path.name, converted_records=records)

    @staticmethod
    def _link_free_name(tmp: Path, stem: str) -> Path:
        """Give ``tmp`` the name ``<stem>.jsonl``, or ``<stem>-N.jsonl`` when a file has it (link, unlike
        rename, never replaces one); durable once this returns."""
        while len(os.fsencode(stem)) > 200:  # room for "-N.jsonl" within the 255-byte name limit
            stem = stem[:-1]
        for n in range(1, 1000):
            target = tmp.parent / (f"{stem}.jsonl" if n == 1 else f"{stem}-{n}.jsonl")
            try:
                os.link(tmp, target)
            except FileExistsError:
                continue
            except OSError:  # a filesystem without hard links: rename, after checking the name is free
                if target.exists():
                    continue
                os.rename(tmp, target)
            fsync_dir(tmp.parent)
            return target
        raise FileExistsError(f"{stem}.jsonl and 998 numbered variants already exist in {tmp.parent}")


__all__ = ["Intake", "is_ignored", "SYMLINK_REASON", "FOLDER_REASON", "SUFFIX_REASON", "CONVERT_PREFIX"]
