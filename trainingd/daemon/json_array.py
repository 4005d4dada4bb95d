"""A JSON array file (``[{...}, {...}]``, as LLaMA-Factory and many exports write data) converted to JSON Lines.

Streaming, stdlib only: the array is decoded one element at a time, so memory follows the largest record, not
the file. Every refusal is a ``NotConvertible`` whose message says what is wrong with the file (the inbox adds
how to convert it by hand).

    from trainingd.daemon.json_array import convert, NotConvertible
    records = convert(Path("data.json"), Path("data.jsonl.tmp"))   # dst written and fsynced
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, TextIO

MAX_BYTES = 512 * 2**20  # larger files are refused: converting blocks the daemon's loop for the duration
MAX_RECORD_CHARS = 64 * 2**20
CHUNK_CHARS = 2**20
# A value cut by the end of the buffer fails at most this far before the end (a literal, a \uXXXX pair, a
# number's exponent), except an unterminated string, which is told apart by its message.
_CUT_MARGIN = 64


class NotConvertible(Exception):
    """The file is not a JSON array of objects (or too big to convert here); ``str(e)`` says why."""


def _type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


class _Reader:
    """A sliding text buffer over ``f`` that knows the line and column of any position in it."""

    def __init__(self, f: TextIO, chunk_chars: int = CHUNK_CHARS):
        self.f = f
        self.chunk_chars = chunk_chars
        self.buf = ""
        self.pos = 0
        self.eof = False
        self.lines_before = 0  # newlines in the text already dropped from the buffer
        self.column_before = 0  # characters of the buffer's first line that were already dropped

    def fill(self, chars: int | None = None) -> bool:
        """Drop what was consumed and read more; False at the end of the file."""
        if self.pos:
            newlines = self.buf.count("\n", 0, self.pos)
            self.lines_before += newlines
            if newlines:
                self.column_before = self.pos - self.buf.rfind("\n", 0, self.pos) - 1
            else:
                self.column_before += self.pos
            self.buf = self.buf[self.pos:]
            self.pos = 0
        try:
            chunk = self.f.read(chars or self.chunk_chars)
        except UnicodeDecodeError as e:
            raise NotConvertible(f"is not UTF-8 text (byte 0x{e.object[e.start]:02x})") from None
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file), without consuming it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def where(self, pos: int) -> str:
        newlines = self.buf.count("\n", 0, pos)
        column = pos - self.buf.rfind("\n", 0, pos) if newlines else self.column_before + pos + 1
        return f"line {self.lines_before + newlines + 1} column {column}"

    def value(self, decoder: json.JSONDecoder, number: int) -> Any:
        """Decode the JSON value at the current position, reading more while it may be cut by the buffer."""
        want = self.chunk_chars
        while True:
            try:
                value, end = decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                cut = e.pos >= len(self.buf) - _CUT_MARGIN or e.msg.startswith("Unterminated string")
                if self.eof or not cut:
                    at = "" if e.msg.endswith(" at") else " at"  # "Unterminated string starting at"
                    raise NotConvertible(f"is not valid JSON ({e.msg}{at} {self.where(e.pos)})") from None
                if len(self.buf) - self.pos > MAX_RECORD_CHARS:
                    raise NotConvertible(f"record {number} is larger than {MAX_RECORD_CHARS // 2**20} MiB "
                                         f"(or not valid JSON: {e.msg} at {self.where(e.pos)})") from None
                self.fill(want)
                want *= 2  # a long record is re-decoded a logarithmic number of times, not once per chunk
                continue
            except RecursionError:
                raise NotConvertible(f"is not valid JSON (nested too deeply in record {number})") from None
            if end > len(self.buf) - _CUT_MARGIN and not self.eof:
                self.fill(want)  # a number near the end may go on in the next chunk ("1" of "1e5")
                continue  # decode again from the (shifted) buffer
            self.pos = end
            return value


def iter_records(f: TextIO, chunk_chars: int = CHUNK_CHARS) -> Iterator[Any]:
    """The elements of the JSON array in ``f``, one at a time; NotConvertible when it is not one."""
    reader = _Reader(f, chunk_chars)
    decoder = json.JSONDecoder()
    first = reader.peek()
    if first == "":
        raise NotConvertible("is empty")
    if first == "{":
        raise NotConvertible("holds a JSON object, not an array of records: if it is JSON Lines (one object per "
                             "line), name it .jsonl; if it is one record, write it as one line of a .jsonl file")
    if first != "[":
        raise NotConvertible(f"does not start with '[' (found {first!r} at {reader.where(reader.pos)}): a .json "
                             "file must be an array of records")
    reader.pos += 1
    if reader.peek() == "]":
        raise NotConvertible("is an empty array: there is nothing to train")
    number = 0
    while True:
        number += 1
        yield reader.value(decoder, number)
        c = reader.peek()
        if c == ",":
            reader.pos += 1
            if reader.peek() == "]":
                raise NotConvertible(f"is not valid JSON (a comma before ']' at {reader.where(reader.pos)})")
            continue
        if c == "]":
            reader.pos += 1
            break
        if c == "":
            raise NotConvertible("is not valid JSON (the array is not closed: ']' is missing at the end)")
        raise NotConvertible(f"is not valid JSON (expected ',' or ']' after record {number} at "
                             f"{reader.where(reader.pos)})")
    if reader.peek() != "":
        raise NotConvertible(f"is not valid JSON (more text after the closing ']' at {reader.where(reader.pos)})")


def convert(src: Path, dst: Path, *, max_bytes: int = MAX_BYTES) -> int:
    """Write the records of the JSON array ``src`` to ``dst`` as JSON Lines (fsynced); returns their count.

    Every element must be an object. ``dst`` is overwritten; the caller renames it into place. On
    NotConvertible, ``dst`` may hold part of the output: the caller removes it.
    """
    size = os.stat(src).st_size
    if size > max_bytes:
        raise NotConvertible(f"is {size / 2**20:.0f} MiB, larger than the {max_bytes // 2**20} MiB converted "
                             "in the inbox")
    count = 0
    with open(src, encoding="utf-8-sig", newline="") as f, open(dst, "wb") as out:
        for count, record in enumerate(iter_records(f), start=1):
            if not isinstance(record, dict):
                raise NotConvertible(f"record {count} is {_type(record)}, not an object: training data holds one "
                                     "JSON object per record")
            try:
                line = json.dumps(record, ensure_ascii=False)
                out.write(line.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate escape (\ud800): keep it escaped
                out.write(json.dumps(record).encode("utf-8"))
            out.write(b"\n")
        out.flush()
        os.fsync(out.fileno())
    return count


__all__ = ["convert", "iter_records", "NotConvertible", "MAX_BYTES"]
