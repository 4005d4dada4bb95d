"""Training-file formats: detection, per-record validation and streaming validation of a JSONL file.

Five record shapes are accepted (one per file, detected from the first valid record's keys):

    messages           {"messages": [{"role": "user", "content": "..."}, ...], "system": "...", "tools": [...]}
    prompt_completion  {"prompt": "...", "completion": "..."}
    alpaca             {"instruction": "...", "input": "...", "output": "...", "system": "...",
                        "history": [["earlier instruction", "earlier response"], ...]}
    sharegpt           {"conversations": [{"from": "human", "value": "..."}, ...], "system": "...", "tools": "..."}
    text               {"text": "..."}

Everything but ``messages``/``conversations`` (or ``instruction``+``output``, ``prompt``+``completion``,
``text``) is optional. Within a chat:

- ``messages`` roles are system, user, assistant and tool. ``content`` is a string or content parts as the
  peers write them (``chat_fields.read_parts``): OpenAI ``{"type": "text", "text": "..."}`` parts are joined by a
  newline (as vLLM joins them for a text-only template); ``{"text": ...}`` without a type, Axolotl's
  ``"content"``/``"value"`` keys and per-part ``train``/``weight`` (one value per message), LLaMA-Factory's
  ``{"type": "text"|"reasoning"|"tool_call", "value": ...}`` and ``{"type": "thinking", "thinking": ...}`` are
  concatenated as those trainers do, reasoning parts becoming ``reasoning_content`` and tool-call parts
  ``tool_calls``; any other part (``image_url``, audio) is refused: the trainer is text-only. ``reasoning_content``
  may be a string or text parts (Axolotl). An assistant message may carry
  ``tool_calls`` (OpenAI ``{"type": "function", "function": {"name", "arguments"}}`` or the flat ``{"name",
  "arguments"}``; ``content`` may then be null or absent) and ``reasoning_content``; a tool message may carry
  ``name`` and ``tool_call_id``.
- ShareGPT ``from`` is human/user, gpt/assistant, system, and LLaMA-Factory's ``function_call`` (its value the
  JSON of ``{"name", "arguments"}`` or of an array of them) and ``observation`` (a tool result).
- ``tools`` is an array of OpenAI tools or of bare function schemas ``{"name", "description", "parameters"}``,
  or the JSON string of one (LLaMA-Factory's glaive_toolcall layout).
- Any message or ShareGPT turn may switch its loss on or off: ``"train": true|false`` (Axolotl) or
  ``"loss_weight": 0|1`` (LLaMA-Factory; 0.0/1.0 too, no other weight).
- Alpaca joins instruction and input with a blank line (LLaMA-Factory uses one newline); ``history`` pairs
  come first, as earlier turns.

``to_messages`` turns any chat record into one normalised message list and ``to_tools`` gives its tools (the
shapes are in their docstrings): the masking code sees nothing else. The message fields themselves (content
parts, tool calls, tools, the loss switch) are checked and normalised in ``chat_fields.py``. Stdlib only, so
the daemon could check a file without importing torch. Check a file from the shell:

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

from trainingd.train.chat_fields import (Parts, check_call, check_content, check_loss_switch, json_type, loss_switch,
                                         parse_json_text, parse_tools, read_parts, tool_call)

FORMATS = ("messages", "prompt_completion", "alpaca", "sharegpt", "text")
MESSAGE_ROLES = ("system", "user", "assistant", "tool")
# ShareGPT's plain roles, and LLaMA-Factory's tool roles (a function_call turn becomes an assistant message
# with tool_calls; an observation turn becomes a tool message).
SHAREGPT_PLAIN = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
SHAREGPT_ROLES = {**SHAREGPT_PLAIN, "function_call": "assistant", "observation": "tool"}
MAX_DETAILS = 50  # bad lines kept in DataError.details; the total is always in .counts
REASON_LINES = 3  # bad lines quoted in the one-line reason
# The longest line validation holds in memory; a longer one is hashed in pieces and refused, so no input makes
# memory grow with the length of a line beyond this (peak about 6x it, while json.loads builds the record).
MAX_LINE_BYTES = 8 * 2**20


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
        raise ValueError(f"expected a JSON object, got {json_type(record)}")
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


def _check_str(record: dict, key: str, optional: bool = False) -> str | None:
    if key not in record or (optional and record[key] is None):
        return None if optional else f"missing key \"{key}\""
    if not isinstance(record[key], str):
        return f"\"{key}\" must be a string, got {json_type(record[key])}"
    return None


# ------------------------------------------------------------------------------- chat records
def _check_messages(turns: Any) -> str | None:
    if not isinstance(turns, list):
        return f"\"messages\" must be an array, got {json_type(turns)}"
    if not turns:
        return "\"messages\" is empty"
    has_assistant = False
    for i, m in enumerate(turns):
        if type(m) is dict and len(m) == 2 and type(m.get("content")) is str and m.get("role") in MESSAGE_ROLES:
            has_assistant = has_assistant or m["role"] == "assistant"  # the common case, checked cheaply
            continue
        where = f"\"messages\"[{i}]"
        if not isinstance(m, dict):
            return f"{where} must be an object, got {json_type(m)}"
        if "role" not in m:
            return f"{where} has no \"role\""
        role = m["role"]
        if not isinstance(role, str) or role not in MESSAGE_ROLES:
            return f"{where} has role {json.dumps(role)}; expected system, user, assistant or tool"
        calls = m.get("tool_calls")
        if calls == []:  # exports write an empty list on every message: the same as none
            calls = None
        if calls is not None:
            if role != "assistant":
                return f"{where} has \"tool_calls\" but role \"{role}\"; only assistant messages call tools"
            if not isinstance(calls, list):
                return f"{where} \"tool_calls\" must be an array, got {json_type(calls)}"
            for j, call in enumerate(calls):
                error = check_call(call, f"{where} \"tool_calls\"[{j}]")
                if error:
                    return error
        if m.get("content") is None and not calls:
            if "content" not in m:
                return f"{where} has no \"content\""
            return f"{where} \"content\" must be a string, got null (null is allowed only beside \"tool_calls\")"
        error = _check_parts(m, where, role)
        if error:
            return error
        if role == "tool":
            for key in ("name", "tool_call_id"):
                if m.get(key) is not None and not isinstance(m[key], str):
                    return f"{where} \"{key}\" must be a string, got {json_type(m[key])}"
        error = check_loss_switch(m, where)
        if error:
            return error
        has_assistant = has_assistant or role == "assistant"
    if not has_assistant:
        return "\"messages\" has no assistant turn"
    return None


def _read_message_parts(m: dict, where: str, role: str) -> tuple[Parts, Parts | None, str | None]:
    """``(content parts, reasoning_content parts, error)`` of one message; a string content is one part."""
    content = m.get("content")
    if isinstance(content, list):
        parts, error = read_parts(content, f"{where} \"content\"", role)
        if error:
            return Parts(), None, error
    else:
        error = check_content(content, f"{where} \"content\"", role) if content is not None else None
        if error:
            return Parts(), None, error
        parts = Parts(text=[content] if content is not None else [])
    reasoning = m.get("reasoning_content")
    thought = None
    if isinstance(reasoning, list):  # Axolotl: reasoning_content as parts
        thought, error = read_parts(reasoning, f"{where} \"reasoning_content\"", role, reasoning_only=True)
        if error:
            return Parts(), None, error
    elif reasoning is not None:
        if not isinstance(reasoning, str):
            return Parts(), None, (f"{where} \"reasoning_content\" must be a string, got {json_type(reasoning)} "
                                   "(or an array of text parts)")
        if reasoning and role != "assistant":
            return Parts(), None, (f"{where} has \"reasoning_content\" but role \"{role}\"; only assistant "
                                   "messages reason")
    return parts, thought, None


def _check_parts(m: dict, where: str, role: str) -> str | None:
    parts, thought, error = _read_message_parts(m, where, role)
    if error:
        return error
    given = m.get("reasoning_content")
    if parts.reasoning and (thought is not None or (isinstance(given, str) and given)):
        return (f"{where} has reasoning both in \"reasoning_content\" and in reasoning parts of \"content\"; "
                "give it once")
    switches = {k: v for k, v in (("the message's \"train\"/\"loss_weight\"", loss_switch(m)),
                                  ("its \"content\" parts' \"train\"", parts.train),
                                  ("its \"reasoning_content\" parts' \"train\"", thought and thought.train))
                if v is not None}
    if len(set(switches.values())) > 1:
        said = ", ".join(f"{k}: {json.dumps(v)}" for k, v in switches.items())
        return f"{where} switches its loss both on and off ({said}); trainingd trains or masks whole messages: give one"
    return None


def _message(m: dict) -> dict:
    """One valid ``messages`` entry in the normalised shape (see ``to_messages``)."""
    content = m.get("content")
    if type(content) is str and len(m) == 2:
        return {"role": m["role"], "content": content}
    role = m["role"]
    parts, thought, _ = _read_message_parts(m, "", role)
    out: dict[str, Any] = {"role": role, "content": parts.joined_text()}
    if role == "assistant":
        calls = [tool_call(c) for c in m.get("tool_calls") or ()] + parts.calls
        if calls:
            out["tool_calls"] = calls
        reasoning = ("".join(thought.text + thought.reasoning) if thought is not None
                     else m.get("reasoning_content") or ("".join(parts.reasoning) if parts.reasoning else None))
        if reasoning is not None or m.get("reasoning_content") is not None:
            out["reasoning_content"] = reasoning if reasoning is not None else m["reasoning_content"]
    elif role == "tool":
        for key in ("name", "tool_call_id"):
            if m.get(key) is not None:
                out[key] = m[key]
    train = next((t for t in (loss_switch(m), parts.train, thought and thought.train) if t is not None), None)
    if train is not None:
        out["train"] = train
    return out


def _function_calls(value: Any) -> tuple[list | None, str | None]:
    """A ShareGPT ``function_call`` turn's value: the JSON (string or value) of one call ``{"name",
    "arguments"}`` or an array of them (parallel calls)."""
    if isinstance(value, str):
        value, error = parse_json_text(value)
        if error is not None:
            return None, (f"\"value\" is not JSON ({error}); a function_call turn holds "
                          "{\"name\": ..., \"arguments\": {...}}")
    calls = value if isinstance(value, list) else [value]
    if not calls:
        return None, "\"value\" is an empty array; a function_call turn holds at least one call"
    for j, call in enumerate(calls):
        error = check_call(call, f"\"value\"[{j}]" if isinstance(value, list) else "\"value\"")
        if error:
            return None, error
    return [tool_call(c) for c in calls], None


def _check_conversations(turns: Any) -> str | None:
    if not isinstance(turns, list):
        return f"\"conversations\" must be an array, got {json_type(turns)}"
    if not turns:
        return "\"conversations\" is empty"
    has_assistant = False
    for i, t in enumerate(turns):
        if (type(t) is dict and len(t) == 2 and type(t.get("value")) is str and type(t.get("from")) is str
                and t["from"] in SHAREGPT_PLAIN):
            has_assistant = has_assistant or SHAREGPT_PLAIN[t["from"]] == "assistant"
            continue
        where = f"\"conversations\"[{i}]"
        if not isinstance(t, dict):
            return f"{where} must be an object, got {json_type(t)}"
        for k in ("from", "value"):
            if k not in t:
                return f"{where} has no \"{k}\""
        role = t["from"]
        if not isinstance(role, str) or role not in SHAREGPT_ROLES:
            return (f"{where} has from {json.dumps(role)}; expected human, user, gpt, assistant, system, "
                    "function_call or observation")
        if role == "function_call":
            error = _function_calls(t["value"])[1]
            if error:
                return f"{where} {error}"
        elif not isinstance(t["value"], str):
            return f"{where} \"value\" must be a string, got {json_type(t['value'])}"
        error = check_loss_switch(t, where)
        if error:
            return error
        has_assistant = has_assistant or SHAREGPT_ROLES[role] == "assistant"
    if not has_assistant:
        return "\"conversations\" has no assistant turn"
    return None


def _turn(t: dict) -> dict:
    """One valid ShareGPT turn as a normalised message."""
    role = t["from"]
    if role == "function_call":
        out: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": _function_calls(t["value"])[0]}
    else:
        out = {"role": SHAREGPT_ROLES[role], "content": t["value"]}
    if len(t) > 2:
        train = loss_switch(t)
        if train is not None:
            out["train"] = train
    return out


def _check_history(history: Any) -> str | None:
    if history is None:
        return None
    if not isinstance(history, list):
        return f"\"history\" must be an array of [instruction, response] pairs, got {json_type(history)}"
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            got = f"an array of {len(pair)}" if isinstance(pair, list) else json_type(pair)
            if isinstance(pair, list) and len(pair) == 2:
                got = f"[{json_type(pair[0])}, {json_type(pair[1])}]"
            return f"\"history\"[{i}] must be an [instruction, response] pair of strings, got {got}"
    return None


def check_record(record: Any, fmt: str) -> str | None:
    """Why ``record`` is not a valid ``fmt`` record, or None when it is."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {json_type(record)}"
    if fmt == "messages":
        if "messages" not in record:
            return "missing key \"messages\""
        return (_check_str(record, "system", optional=True) or _check_messages(record["messages"])
                or ("tools" in record and parse_tools(record["tools"])[1]) or None)
    if fmt == "sharegpt":
        if "conversations" not in record:
            return "missing key \"conversations\""
        return (_check_str(record, "system", optional=True) or _check_conversations(record["conversations"])
                or ("tools" in record and parse_tools(record["tools"])[1]) or None)
    if fmt == "prompt_completion":
        return _check_str(record, "prompt") or _check_str(record, "completion")
    if fmt == "alpaca":
        return (_check_str(record, "instruction") or _check_str(record, "input", optional=True)
                or _check_str(record, "output") or _check_str(record, "system", optional=True)
                or _check_history(record.get("history")))
    if fmt == "text":
        return _check_str(record, "text")
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def to_messages(record: dict, fmt: str) -> list[dict] | None:
    """A valid record as normalised chat messages; None for raw ``text``.

    Each message is ``{"role": "system"|"user"|"assistant"|"tool", "content": str}`` (content "" when an
    assistant message only calls tools), plus, only when present: ``tool_calls`` (a list of ``{"type":
    "function", "function": {"name": str, "arguments": dict}}``; arguments stay a string when they are not a
    JSON object), ``reasoning_content`` (assistant), ``name`` / ``tool_call_id`` (tool) and ``train`` (bool,
    only when the record sets the per-message loss switch).
    """
    if fmt == "text":
        return None
    if fmt == "messages":
        msgs = [_message(m) for m in record["messages"]]
    elif fmt == "sharegpt":
        msgs = [_turn(t) for t in record["conversations"]]
    elif fmt == "prompt_completion":
        return [{"role": "user", "content": record["prompt"]}, {"role": "assistant", "content": record["completion"]}]
    elif fmt == "alpaca":
        extra = record.get("input") or ""
        user = f"{record['instruction']}\n\n{extra}" if extra else record["instruction"]
        msgs = []
        for prompt, response in record.get("history") or ():
            msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]
    else:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if record.get("system"):
        msgs.insert(0, {"role": "system", "content": record["system"]})
    return msgs


def to_tools(record: dict, fmt: str) -> list[dict] | None:
    """A valid record's tools as OpenAI tools ``[{"type": "function", "function": {"name", "description",
    "parameters"}}]`` (bare function schemas wrapped, a JSON string parsed); None when it has none."""
    if fmt not in ("messages", "sharegpt"):
        return None
    return parse_tools(record.get("tools"))[0]


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


def _bounded_lines(f, on_bytes: Callable[[bytes], None]) -> Iterator[bytes | None]:
    """Each line of binary file ``f`` (with its newline), or None for one longer than MAX_LINE_BYTES, which is
    read in pieces and never held whole. Every byte read goes to ``on_bytes`` (the file's hash)."""
    while True:
        raw = f.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        on_bytes(raw)
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield raw
            continue
        while not raw.endswith(b"\n"):
            raw = f.readline(1 << 20)
            if not raw:
                break
            on_bytes(raw)
        yield None


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
        for number, raw in enumerate(_bounded_lines(f, h.update), start=1):
            scan.lines = number
            if raw is None:
                _bad(scan, number, f"line is longer than {MAX_LINE_BYTES // 2**20} MiB, the most one example may "
                                   "hold: split it into shorter examples or remove it")
                continue
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
                error = f"expected a JSON object, got {json_type(record)}"
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
