"""Training-file formats: detection, per-record validation and streaming validation of a JSONL file.

Five record shapes are accepted (one per file, detected from the first valid record):

    messages           {"messages": [{"role": "user", "content": "..."}, ...], "system": "..." (optional)}
    prompt_completion  {"prompt": "...", "completion": "..."}
    alpaca             {"instruction": "...", "input": "..." (optional), "output": "..."}
    sharegpt           {"conversations": [{"from": "human", "value": "..."}, ...], "system": "..." (optional)}
    text               {"text": "..."}

Stdlib only, so the daemon could check a file without importing torch. Check a file from the shell:

    python -m trainingd.train.formats FILE.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

FORMATS = ("messages", "prompt_completion", "alpaca", "sharegpt", "text")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}
MAX_DETAILS = 50  # bad lines kept in DataError.details; the total is always in .counts
REASON_LINES = 3  # bad lines quoted in the one-line reason


class DataError(Exception):
    """The file cannot be trained.

    ``str(e)`` is one line a person can act on; ``.details`` is a list of ``{"line": int | None, "error": str}``
    (at most 50 kept, with the total count in ``.counts["bad_lines"]``).
    """

    def __init__(self, reason: str, details: list[dict] | None = None, counts: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.details = list(details or [])[:MAX_DETAILS]
        self.counts = dict(counts or {})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written beside a failed job."""
        return {"reason": self.reason, "details": self.details, "counts": self.counts}


def _keys(record: dict) -> str:
    return ", ".join(repr(k) for k in list(record)[:8]) or "none"


def detect_format(record: dict) -> str:
    """The format of one record, from its keys; raises ValueError naming the keys it saw."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {_json_type(record)}")
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "text" in record:
        return "text"
    raise ValueError(
        f"unrecognised record with keys {_keys(record)}; expected \"messages\", \"conversations\", "
        f"\"prompt\"+\"completion\", \"instruction\"+\"output\" or \"text\""
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def _check_str(record: dict, key: str, optional: bool = False) -> str | None:
    if key not in record or (optional and record[key] is None):
        return None if optional else f"missing key \"{key}\""
    if not isinstance(record[key], str):
        return f"\"{key}\" must be a string, got {_json_type(record[key])}"
    return None


def _check_turns(turns: Any, key: str, role_key: str, text_key: str, roles: Any, expected: str) -> str | None:
    if not isinstance(turns, list):
        return f"\"{key}\" must be an array, got {_json_type(turns)}"
    if not turns:
        return f"\"{key}\" is empty"
    has_assistant = False
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            return f"\"{key}\"[{i}] must be an object, got {_json_type(turn)}"
        for k in (role_key, text_key):
            if k not in turn:
                return f"\"{key}\"[{i}] has no \"{k}\""
        role = turn[role_key]
        if not isinstance(role, str) or role not in roles:
            return f"\"{key}\"[{i}] has {role_key} {json.dumps(role)}; expected {expected}"
        if not isinstance(turn[text_key], str):
            return f"\"{key}\"[{i}] \"{text_key}\" must be a string, got {_json_type(turn[text_key])}"
        has_assistant = has_assistant or roles[role] == "assistant"
    if not has_assistant:
        return f"\"{key}\" has no assistant turn"
    return None


def check_record(record: Any, fmt: str) -> str | None:
    """Why ``record`` is not a valid ``fmt`` record, or None when it is."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {_json_type(record)}"
    if fmt == "messages":
        if "messages" not in record:
            return "missing key \"messages\""
        return _check_str(record, "system", optional=True) or _check_turns(
            record["messages"], "messages", "role", "content", {r: r for r in ROLES}, "system, user or assistant")
    if fmt == "sharegpt":
        if "conversations" not in record:
            return "missing key \"conversations\""
        return _check_str(record, "system", optional=True) or _check_turns(
            record["conversations"], "conversations", "from", "value", SHAREGPT_ROLES,
            "human, user, gpt, assistant or system")
    if fmt == "prompt_completion":
        return _check_str(record, "prompt") or _check_str(record, "completion")
    if fmt == "alpaca":
        return _check_str(record, "instruction") or _check_str(record, "input", optional=True) or _check_str(
            record, "output")
    if fmt == "text":
        return _check_str(record, "text")
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def to_messages(record: dict, fmt: str) -> list[dict] | None:
    """A valid record as chat messages ``[{"role", "content"}]``; None for raw ``text``."""
    if fmt == "text":
        return None
    if fmt == "messages":
        msgs = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        if record.get("system"):
            msgs.insert(0, {"role": "system", "content": record["system"]})
        return msgs
    if fmt == "sharegpt":
        msgs = [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in record["conversations"]]
        if record.get("system"):
            msgs.insert(0, {"role": "system", "content": record["system"]})
        return msgs
    if fmt == "prompt_completion":
        return [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    if fmt == "alpaca":
        extra = record.get("input") or ""
        user = f"{record['instruction']}\n\n{extra}" if extra else record["instruction"]
        return [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def parse_line(raw: bytes) -> tuple[Any, str | None]:
    """Decode and parse one JSONL line: (value, None) or (None, error without the line number)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno})"
    except RecursionError:
        return None, "invalid JSON (nested too deeply)"


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number from 1, raw bytes without the newline) for each non-blank line; a leading BOM is dropped."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            raw = raw.rstrip(b"\r\n")
            if raw.strip():
                yield number, raw


@dataclass
class Scan:
    """What one streaming pass over a file found."""

    format: str | None = None
    lines: int = 0
    examples: int = 0
    bad_lines: int = 0
    details: list[dict] = field(default_factory=list)
    sha256: str = ""


def _bad(scan: Scan, line: int | None, error: str) -> None:
    scan.bad_lines += 1
    if len(scan.details) < MAX_DETAILS:
        scan.details.append({"line": line, "error": error})


def bad_lines_reason(details: list[dict], total: int, what: str = "bad line") -> str:
    """One line quoting the first few bad lines and the total."""
    quoted = "; ".join(f"line {d['line']}: {d['error']}" if d["line"] is not None else d["error"]
                       for d in details[:REASON_LINES])
    if total == 1:
        return quoted
    more = f" (and {total - REASON_LINES} more)" if total > REASON_LINES else ""
    return f"{total} {what}s: {quoted}{more}"


def scan_file(path: Path, progress: Callable[[int], None] | None = None) -> Scan:
    """Validate a JSONL training file in one streaming pass (memory does not grow with the file).

    Returns the Scan of a trainable file; raises DataError for an empty, binary or non-UTF-8 file, or any bad
    line (every bad line is counted; the first 50 are kept with their line numbers). ``progress(lines_done)``
    is called every 1,000 lines.
    """
    path = Path(path)
    scan = Scan()
    h = hashlib.sha256()
    offset = 0
    first_format_line = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            h.update(raw)
            scan.lines = number
            nul = raw.find(b"\x00")
            if nul >= 0:
                raise DataError(f"file is binary (NUL byte at offset {offset + nul})",
                                [{"line": number, "error": "NUL byte"}], {"lines": number, "bad_lines": 1})
            offset += len(raw)
            if progress is not None and number % 1000 == 0:
                progress(number)
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            record, error = parse_line(raw.rstrip(b"\r\n"))
            if error is None and not isinstance(record, dict):
                error = f"expected a JSON object, got {_json_type(record)}"
                if isinstance(record, list) and scan.examples == 0 and scan.bad_lines == 0:
                    error += " (JSONL holds one object per line, not a JSON array)"
            elif error is not None and raw.strip() in (b"[", b"{") and scan.bad_lines == 0:
                error += " (JSONL holds one object per line; this looks like pretty-printed JSON)"
            if error is None and scan.format is None:
                try:
                    scan.format = detect_format(record)
                    first_format_line = number
                except ValueError as e:
                    error = str(e)
            elif error is None:
                try:
                    fmt = detect_format(record)
                except ValueError as e:
                    fmt, error = None, str(e)
                if fmt is not None and fmt != scan.format:
                    error = (f"record is in format {fmt} (keys {_keys(record)}) but the file is in format "
                             f"{scan.format} (from line {first_format_line})")
            if error is None:
                error = check_record(record, scan.format)
            if error is not None:
                _bad(scan, number, error)
            else:
                scan.examples += 1
    scan.sha256 = h.hexdigest()
    counts = {"lines": scan.lines, "examples": scan.examples, "bad_lines": scan.bad_lines}
    if scan.bad_lines:
        raise DataError(bad_lines_reason(scan.details, scan.bad_lines), scan.details, counts)
    if scan.examples == 0:
        raise DataError("file is empty" if scan.lines == 0 else "file is empty (only blank lines)", [], counts)
    return scan


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Check a JSONL training file without training it.")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    try:
        scan = scan_file(a.file)
    except DataError as e:
        print(json.dumps(e.to_dict(), indent=2) if a.json else f"{a.file}: {e}")
        return 1
    result = {"format": scan.format, "lines": scan.lines, "examples": scan.examples, "sha256": scan.sha256}
    print(json.dumps(result, indent=2) if a.json else f"{a.file}: ok, {scan.examples} {scan.format} examples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
