"""``current_model/adapter_state.json``: what the live adapter is and which jobs are in it. Stdlib only.

The trainer writes it last when it publishes an adapter (after the weights are durable; ``write_adapter_state``:
``atomic_ops.atomic_write_json``); the daemon reads
it to complete jobs published before a crash, to skip files already trained (dedupe), and to see whether
config.json still matches the adapter. Read and write it only through this module::

    {"base_model": "/abs/base", "base_model_hash": "sha256 of the base's config and weights",
     "locked": {"base_model": ..., "lora.r": 16, ...},   # what makes the adapter this adapter
     "model_name": "trainingd-adapter",
     "generation": 3,                                     # bumped by every publish (0: no adapter yet)
     "generation_id": "5f0c...",                           # new random id at every publish
     "trained": [{"job_id", "sha256", "file", "steps", "finished_at", "generation"}, ...],   # the newest jobs
     "trained_segments": ["<sha256>", ...],   # the older ones, sealed: trained/<sha256>.json, SEGMENT_SIZE each
     "trained_count": 3,                      # all of them (segments + "trained")
     "updated_at": 1764470000.5,
     "base_content_sha256": "...",        # every byte of the base, added by the daemon (trainingd.lifecycle.home_guard)
     "approvals": [{"at", "who", "changes"}, ...],   # locked-key changes accepted (trainingd.lifecycle.approval)
     "restored_from": "<snapshot name>"}  # after a rollback, until the next publish (trainingd.lifecycle.snapshots)

The list of trained jobs grows with every job, and this file is rewritten at every publish and copied into every
snapshot; so it holds only the newest jobs. Once ``trained`` holds more than ``SEGMENT_SIZE`` entries,
``write_adapter_state`` seals the oldest ``SEGMENT_SIZE`` into ``trained/<sha256>.json`` beside it (immutable,
named by the SHA-256 of its bytes, durable before the state names it) and lists its name in ``trained_segments``.
A publish then rewrites at most ``SEGMENT_SIZE`` entries, and a snapshot hard-links the sealed segments instead of
copying them. The newest job always stays in ``trained``, so a republish after a crash finds it there. Read the
whole list with ``trained_entries(state, folder)`` (or ``iter_trained``, one segment at a time).

The generation is part of a checkpoint's identity: a checkpoint records the ``generation_id`` of the
adapter its job started from, and resumes only onto that adapter (otherwise the job is retrained on the
current one), so a resume never overwrites what was published in between. Files written before
generations existed read as generation 0 with id ``None``.

    python3 -c "from trainingd.contracts.adapter_state import read_adapter_state; print(read_adapter_state('current_model'))"
"""  # noqa: E501 - the shell line above is copied whole

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from trainingd.atomic_ops import atomic_write_bytes, atomic_write_json, durable_copy, fsync_dir, read_json

FILE = "adapter_state.json"
SEGMENTS = "trained"  # the folder of sealed segments, beside the state file
# Entries per sealed segment; the suite sets a small one to seal within a few jobs. A state records its count, so
# segments of another size still read right.
SEGMENT_SIZE = max(1, int(os.environ.get("TRAININGD_TRAINED_SEGMENT_SIZE") or 256))


def read_adapter_state(folder: Path | str) -> dict | None:
    """The state of the adapter in ``folder``; None when there is none. Raises ValueError when unreadable."""
    data = read_json(Path(folder) / FILE, None)
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"{Path(folder) / FILE} is not a JSON object")
    return data


def adapter_state_stamp(folder: Path | str) -> tuple:
    """(mtime_ns, size, inode) of the state file, ``()`` when there is none: changes with every publish."""
    try:
        st = (Path(folder) / FILE).stat()
    except FileNotFoundError:
        return ()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def write_adapter_state(folder: Path | str, state: dict, *, segments_from: Iterable[Path | str] = ()) -> dict:
    """Replace the state file atomically and durably (the last step of a publish); returns what was written.

    Seals the oldest entries when ``trained`` is longer than ``SEGMENT_SIZE``. Every segment the state names must be
    in ``folder/trained/`` before the state is: one missing there is hard-linked (or copied) from the first of
    ``segments_from`` that has it (a snapshot being restored, the adapter a job started from).
    """
    folder = Path(folder)
    state = _seal(folder, state)
    for name in segment_names(state):
        _bring_segment(folder, name, [Path(f) for f in segments_from])
    atomic_write_json(folder / FILE, state)
    return state


def segment_names(state: dict | None) -> list[str]:
    names = (state or {}).get("trained_segments")
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def segment_path(folder: Path | str, name: str) -> Path:
    return Path(folder) / SEGMENTS / f"{name}.json"


def _segment_bytes(entries: list[dict]) -> bytes:
    return json.dumps(entries, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


def _seal(folder: Path, state: dict) -> dict:
    tail = _tail(state)
    if len(tail) <= SEGMENT_SIZE:
        return state
    names = segment_names(state)
    while len(tail) > SEGMENT_SIZE:
        data = _segment_bytes(tail[:SEGMENT_SIZE])
        name = hashlib.sha256(data).hexdigest()
        path = segment_path(folder, name)
        if not path.is_file():  # content-addressed: an existing one holds these very bytes
            atomic_write_bytes(path, data)
        names.append(name)
        tail = tail[SEGMENT_SIZE:]
    return {**state, "trained": tail, "trained_segments": names, "trained_count": trained_count(state)}


def _bring_segment(folder: Path, name: str, sources: list[Path]) -> None:
    dest = segment_path(folder, name)
    if dest.is_file():
        return
    for src in (segment_path(s, name) for s in sources):
        if not src.is_file():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dest)
        except FileExistsError:
            return
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            durable_copy(src, dest)
        fsync_dir(dest.parent)
        return
    raise FileNotFoundError(f"sealed segment {name} of the trained list is in none of {folder} and "
                            f"{', '.join(map(str, sources)) or 'no other folder'}")


def link_segments(src: Path | str, dest: Path | str, state: dict | None) -> None:
    """Give ``dest`` the sealed segments ``state`` (the state of ``src``) names: hard links, no copies."""
    for name in segment_names(state):
        _bring_segment(Path(dest), name, [Path(src)])


def read_segment(folder: Path | str, name: str) -> list[dict]:
    """One sealed segment; ValueError when it is missing, changed or not a list of entries."""
    path = segment_path(folder, name)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # never a link, a FIFO or a folder put in its place
            raise OSError(f"not a regular file ({stat.filemode(os.lstat(path).st_mode)})")
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"sealed segment {path} of the trained list is unreadable: {e}") from None
    if hashlib.sha256(data).hexdigest() != name:
        raise ValueError(f"sealed segment {path} does not hold the bytes it is named after (changed by hand?)")
    entries = json.loads(data)
    if not isinstance(entries, list):
        raise ValueError(f"sealed segment {path} is not a JSON list")
    return [t for t in entries if isinstance(t, dict)]


def generation_id(state: dict | None) -> str | None:
    """The id of the adapter generation ``state`` describes (None: no adapter, or one from before generations)."""
    value = (state or {}).get("generation_id")
    return value if isinstance(value, str) else None


def _tail(state: dict | None) -> list[dict]:
    trained = (state or {}).get("trained")
    return [t for t in trained if isinstance(t, dict)] if isinstance(trained, list) else []


def iter_trained(state: dict | None, folder: Path | str | None = None) -> Iterator[dict]:
    """The jobs durably in the adapter, oldest first, reading one sealed segment at a time from ``folder``
    (the folder the state was read from). ValueError when the state names segments and ``folder`` is None."""
    names = segment_names(state)
    if names and folder is None:
        raise ValueError("the adapter state names sealed segments of its trained list: pass the folder it is in")
    for name in names:
        yield from read_segment(folder, name)
    yield from _tail(state)


def trained_entries(state: dict | None, folder: Path | str | None = None) -> list[dict]:
    """The jobs durably in the adapter (``iter_trained`` as a list)."""
    return list(iter_trained(state, folder))


def trained_count(state: dict | None) -> int:
    """How many jobs the adapter holds, without reading its sealed segments."""
    count = (state or {}).get("trained_count")
    if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
        return count
    return len(segment_names(state)) * SEGMENT_SIZE + len(_tail(state))


def next_state(previous: dict | None, *, entry: dict, base_model: str, base_model_hash: str, locked: dict,
               model_name: str) -> dict:
    """The state after publishing one more job on top of ``previous``: a new generation listing ``entry``."""
    generation = int((previous or {}).get("generation") or 0) + 1
    # Republishing after a crash must not list the job twice. The job published last is always in the tail
    # (sealing keeps it there), and only that job can be published again.
    tail = _tail(previous)
    trained = [t for t in tail if (t.get("job_id"), t.get("sha256")) != (entry.get("job_id"), entry.get("sha256"))]
    count = trained_count(previous) - (len(tail) - len(trained)) + 1
    trained.append({**entry, "generation": generation})
    segments = segment_names(previous)
    state: dict[str, Any] = {"base_model": base_model, "base_model_hash": base_model_hash, "locked": locked,
                             "model_name": model_name, "generation": generation,
                             "generation_id": uuid.uuid4().hex, "trained": trained, "updated_at": time.time()}
    if segments:
        state["trained_segments"] = segments
    state["trained_count"] = count
    if (previous or {}).get("base_model_hash") == base_model_hash:
        # Recorded by the daemon and by approvals (trainingd.lifecycle.home_guard, trainingd.lifecycle.approval):
        # kept while the base is.
        for key in ("base_content_sha256", "approvals"):
            if (previous or {}).get(key):
                state[key] = previous[key]
    return state
