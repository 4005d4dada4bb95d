"""The fields of a chat message that go beyond role and text: content parts, tool calls, tools and the
per-message loss switch. Each has a check (the reason a person reads, naming the field) and a normaliser (the one
shape the masking code sees). Stdlib only; ``formats.py`` composes them into whole records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number",
            float: "number"}.get(type(value), type(value).__name__)


def parse_json_text(text: str) -> tuple[Any, str | None]:
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"{e.msg} at column {e.colno}"
    except RecursionError:
        return None, "nested too deeply"


# --- content parts ------------------------------------------------------------------------------------------
# Where each dialect keeps a part's text: OpenAI and Axolotl "text", LLaMA-Factory (v1 data) "value", and Axolotl
# also "content"; a reasoning part may also say "thinking" or "reasoning" (Anthropic-style exports).
TEXT_KEYS = ("text", "value", "content")
REASONING_TYPES = ("reasoning", "thinking")
REASONING_KEYS = ("value", "text", "thinking", "reasoning", "content")
MEDIA_TYPES = ("image_url", "image", "input_image", "video_url", "video", "audio_url", "audio", "input_audio", "file")
EXPECTED_TEXT = ('expected its text as a string under "text" (OpenAI, Axolotl), "value" (LLaMA-Factory) or '
                 '"content" (Axolotl)')


@dataclass
class Parts:
    """A message's content parts, read: what the chat template renders from them.

    ``text`` goes to ``content``, ``reasoning`` to ``reasoning_content``, ``calls`` to ``tool_calls``; ``train``
    is the parts' own loss switch (Axolotl's per-part ``train``/``weight``; None when no part sets one).
    """

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    train: bool | None = None
    peer: bool = False  # written in a peer's dialect (joined without a separator, as Axolotl and LLaMA-Factory do)

    def joined_text(self) -> str:
        return ("" if self.peer else "\n").join(self.text)


def _keys_of(part: dict) -> str:
    return ", ".join(json.dumps(k) for k in part)


def _part_text(part: dict, keys: tuple[str, ...], where: str, what: str) -> tuple[str | None, str | None]:
    present = [k for k in keys if k in part and k != "type"]
    strings = [k for k in present if isinstance(part[k], str)]
    if len(strings) == 1:
        return part[strings[0]], None
    if len(strings) > 1:
        return None, f"{where} has its text twice ({', '.join(json.dumps(k) for k in strings)}); give one"
    if present:
        key = present[0]
        return None, (f"{where} {json.dumps(key)} must be a string, got {json_type(part[key])} "
                      f"({what} with keys {_keys_of(part)})")
    return None, f"{where} is {what} with keys {_keys_of(part)}: {EXPECTED_TEXT}"


def _part_switch(part: dict, where: str) -> tuple[bool | None, str | None]:
    """Axolotl's per-part loss switch: ``"train": bool`` or ``"weight": 0|1``."""
    train, weight = part.get("train"), part.get("weight")
    if train is not None and not isinstance(train, bool):
        return None, f"{where} \"train\" must be true or false, got {json_type(train)}"
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                               or weight not in (0, 1)):
        return None, f"{where} \"weight\" must be 0 or 1, got {json.dumps(weight)}"
    if train is not None and weight is not None and train != bool(weight):
        return None, f"{where} has \"train\": {json.dumps(train)} but \"weight\": {json.dumps(weight)}; give one"
    return (train if train is not None else None if weight is None else bool(weight)), None


def read_parts(content: list, where: str, role: str, reasoning_only: bool = False) -> tuple[Parts | None, str | None]:
    """Check and read content parts in every dialect the peers document; ``(parts, None)`` or ``(None, reason)``.

    A part is ``{"type": "text", "text"|"value"|"content": str}``, ``{"text": str}`` without a type, a reasoning
    part ``{"type": "reasoning"|"thinking", "value"|"text"|"thinking": str}`` (assistant messages; rendered as
    ``reasoning_content``) or LLaMA-Factory's ``{"type": "tool_call", "value": "{\"name\", \"arguments\"}"}``
    (assistant; rendered as a tool call). Any part may carry Axolotl's ``train``/``weight``; the parts of a
    message must agree (trainingd trains or masks whole messages). ``reasoning_only``: the parts of Axolotl's
    ``reasoning_content`` list, whose text parts are reasoning.
    """
    out = Parts()
    switches: dict[bool, int] = {}
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        if not isinstance(part, dict):
            return None, f"{at} must be an object like {{\"type\": \"text\", \"text\": \"...\"}}, got {json_type(part)}"
        kind = part.get("type")
        if kind is None and "type" not in part:
            kind, out.peer = "text", True  # {"text": ...} without a type
        if not isinstance(kind, str):
            return None, f"{at} \"type\" must be a string, got {json_type(kind)} (keys {_keys_of(part)})"
        if kind == "text" or kind in REASONING_TYPES:
            is_reasoning = kind in REASONING_TYPES or reasoning_only
            text, error = _part_text(part, REASONING_KEYS if kind in REASONING_TYPES else TEXT_KEYS, at,
                                     f"a {kind} part")
            if error:
                return None, error
            if is_reasoning and role != "assistant":
                return None, f"{at} is a {kind} part but the role is \"{role}\"; only assistant messages reason"
            (out.reasoning if is_reasoning else out.text).append(text)
            out.peer = out.peer or is_reasoning or "text" not in part
        elif kind == "tool_call" and not reasoning_only:
            if role != "assistant":
                return None, f"{at} is a tool_call part but the role is \"{role}\"; only assistant messages call tools"
            value = part.get("value", part.get("function"))
            if isinstance(value, str):
                value, error = parse_json_text(value)
                if error is not None:
                    return None, f"{at} \"value\" must be the JSON of {{\"name\", \"arguments\"}} ({error})"
            error = check_call(value, f"{at} \"value\"")
            if error:
                return None, error
            out.calls.append(tool_call(value))
            out.peer = True
        elif kind in MEDIA_TYPES:
            return None, (f"{at} has type {json.dumps(kind)} (keys {_keys_of(part)}); this trainer is text-only: "
                          f"keep only text parts")
        else:
            allowed = ('"text" or "reasoning"' if reasoning_only
                       else '"text", "reasoning" (or "thinking") or "tool_call"')
            return None, f"{at} has type {json.dumps(kind)} (keys {_keys_of(part)}); expected {allowed} parts"
        switch, error = _part_switch(part, at)
        if error:
            return None, error
        if switch is not None:
            out.peer = True
            switches.setdefault(switch, j)
    if len(switches) > 1:
        return None, (f"{where}[{switches[False]}] has \"train\": false but {where}[{switches[True]}] has "
                      "\"train\": true; trainingd trains or masks whole messages: give the message one \"train\" "
                      "(or split it into messages)")
    out.train = next(iter(switches), None)
    return out, None


def check_content(content: Any, where: str, role: str = "user") -> str | None:
    """A message's text: a string, or content parts in any dialect ``read_parts`` reads."""
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where} must be a string, got {json_type(content)} (or an array of {{\"type\": \"text\"}} parts)"
    return read_parts(content, where, role)[1]


def content_text(content: Any) -> str:
    """A valid content as one string. OpenAI text parts are joined with a newline, as vLLM's OpenAI server joins
    them for a text-only chat template (so training sees what serving sees); parts in a peer's dialect
    (``value``/``content`` keys, per-part ``train``, reasoning or tool-call parts) are concatenated, as Axolotl
    and LLaMA-Factory do. Reasoning and tool-call parts are not text: see ``read_parts``."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts, _ = read_parts(content, "", "assistant")
    return parts.joined_text() if parts is not None else ""


def check_call(call: Any, where: str) -> str | None:
    """One tool call: ``{"type": "function", "function": {"name", "arguments"}}`` or the flat
    ``{"name", "arguments"}``; arguments an object, a (JSON) string, or absent."""
    if not isinstance(call, dict):
        return f"{where} must be an object, got {json_type(call)}"
    if "function" in call:
        if call.get("type", "function") != "function":
            return f"{where} has type {json.dumps(call.get('type'))}; only \"function\" tool calls are supported"
        fn, where = call["function"], f"{where} \"function\""
        if not isinstance(fn, dict):
            return f"{where} must be an object, got {json_type(fn)}"
    else:
        fn = call
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        return f"{where} needs a \"name\" string, got {json_type(fn.get('name'))}"
    args = fn.get("arguments")
    if args is not None and not isinstance(args, (dict, str)):
        return f"{where} \"arguments\" must be an object or a JSON string, got {json_type(args)}"
    return None


def tool_call(call: dict) -> dict:
    """A valid tool call in the one shape the masking code sees; JSON-string arguments parsed."""
    fn = call["function"] if "function" in call else call
    args = fn.get("arguments")
    if args is None or (isinstance(args, str) and not args.strip()):
        args = {}
    elif isinstance(args, str):
        parsed, error = parse_json_text(args)
        if error is None and isinstance(parsed, dict):
            args = parsed
    return {"type": "function", "function": {"name": fn["name"], "arguments": args}}


def check_loss_switch(turn: dict, where: str) -> str | None:
    """The per-message loss switch: Axolotl's ``"train": bool`` and LLaMA-Factory's ``"loss_weight": 0|1``."""
    train = turn.get("train")
    if train is not None and not isinstance(train, bool):
        return f"{where} \"train\" must be true or false, got {json_type(train)}"
    weight = turn.get("loss_weight")
    if weight is None:
        return None
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight not in (0, 1):
        return f"{where} \"loss_weight\" must be 0 or 1 (only 0 or 1 are supported), got {json.dumps(weight)}"
    if train is not None and train != bool(weight):
        return f"{where} has \"train\": {json.dumps(train)} but \"loss_weight\": {json.dumps(weight)}; give one"
    return None


def loss_switch(turn: dict) -> bool | None:
    if turn.get("train") is not None:
        return turn["train"]
    weight = turn.get("loss_weight")
    return None if weight is None else bool(weight)


def parse_tools(value: Any) -> tuple[list | None, str | None]:
    """A record's ``tools``: an array (or the JSON string of one, as LLaMA-Factory writes it) of OpenAI tools
    ``{"type": "function", "function": {...}}`` or bare function schemas ``{"name", "description",
    "parameters"}``. Returns (normalised list or None, error)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, str):
        value, error = parse_json_text(value)
        if error is not None:
            return None, f"\"tools\" is a string but not valid JSON ({error})"
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        return None, f"\"tools\" must be an array of tools (or a JSON string of one), got {json_type(value)}"
    tools = []
    for i, tool in enumerate(value):
        where = f"\"tools\"[{i}]"
        if not isinstance(tool, dict):
            return None, f"{where} must be an object, got {json_type(tool)}"
        if "function" in tool or "type" in tool:
            if tool.get("type", "function") != "function":
                return None, f"{where} has type {json.dumps(tool.get('type'))}; only \"function\" tools are supported"
            fn = tool.get("function")
            where += " \"function\""
        else:
            fn = tool  # a bare function schema
        if not isinstance(fn, dict):
            return None, f"{where} must be an object, got {json_type(fn)}"
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            return None, f"{where} needs a \"name\" string, got {json_type(fn.get('name'))}"
        fn = dict(fn)
        if isinstance(fn.get("parameters"), str):  # Axolotl's advice against mixed types: the schema as JSON text
            fn["parameters"], error = parse_json_text(fn["parameters"])
            if error is not None or not isinstance(fn["parameters"], dict):
                return None, (f"{where} \"parameters\" is a string but not the JSON of an object "
                              f"({error or 'not an object'})")
        tools.append({"type": "function", "function": fn})
    return tools or None, None


__all__ = ["Parts", "check_call", "check_content", "check_loss_switch", "content_text", "json_type", "loss_switch",
           "parse_json_text", "parse_tools", "read_parts", "tool_call"]
