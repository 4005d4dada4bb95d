"""A fold over an append-only JSONL file that reads only the lines appended since it last looked. Stdlib only.

The daemon derives several things from ``status/history.jsonl`` after every job (the gate's streak of rejections
and its last decision, the curriculum's level). Re-reading the whole file each time costs time and memory in
proportion to every job ever run; a fold keeps its value and the byte offset it has read to, so each update
parses only the new lines, and its memory is the value's alone::

    fold = JsonlFold(home.history, start=lambda: 0, step=lambda n, e: n + 1)
    fold.update()        # -> the number of lines so far

A file that shrank or was replaced (another inode) is folded again from its start. A line still being written
(no newline yet) waits for the next update; a line that is not JSON, or not an object, is skipped (as
``read_jsonl`` does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from trainingd.atomic_ops import appended_lines

T = TypeVar("T")


class JsonlFold(Generic[T]):
    def __init__(self, path: Path, start: Callable[[], T], step: Callable[[T, dict], T]):
        self.path = Path(path)
        self._start, self._step = start, step
        self._inode: int | None = None
        self._offset = 0
        self.value: T = start()

    def reset(self) -> None:
        """Fold again from the file's start at the next update (the fold's parameters changed)."""
        self._inode, self._offset, self.value = None, 0, self._start()

    def update(self) -> T:
        """Fold the lines appended since the last update; returns the value. OSError when the file is unreadable."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.reset()
            return self.value
        if st.st_ino != self._inode or st.st_size < self._offset:
            self.reset()
            self._inode = st.st_ino
        if st.st_size == self._offset:
            return self.value
        for at, line in appended_lines(self.path, self._offset):
            self._offset = at + len(line) + 1
            self._feed(line)
        return self.value

    def _feed(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(entry, dict):
            self.value = self._step(self.value, entry)
