"""The fields of a chat message that go beyond role and text: content parts, tool calls, tools and the
per-message loss switch. Each has a check (the reason a person reads, naming the field) and a normaliser (the one
shape the masking code sees). Stdlib only; ``formats.py`` composes them into whole records.
"""

from __future__ import annotations

import json
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


def check_content(content: Any, where: str) -> str | None:
    """A message's text: a string, or OpenAI content parts that are all ``{"type": "text", "text": str}``."""
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where} must be a string, got {json_type(content)} (or an array of {{\"type\": \"text\"}} parts)"
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            return (f"{where}[{j}] must be an object like {{\"type\": \"text\", \"text\": \"...\"}}, "
                    f"got {json_type(part)}")
        kind = part.get("type")
        if kind != "text":
            return (f"{where}[{j}] has type {json.dumps(kind)}; this trainer is text-only: keep only "
                    f"{{\"type\": \"text\"}} parts")
        if not isinstance(part.get("text"), str):
            return f"{where}[{j}] \"text\" must be a string, got {json_type(part.get('text'))}"
    return None


def content_text(content: Any) -> str:
    """A valid content as one string: parts joined with a newline, as vLLM's OpenAI server joins them for a
    text-only chat template (so training sees what serving sees)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(part["text"] for part in content)


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
        tools.append({"type": "function", "function": dict(fn)})
    return tools or None, None


__all__ = ["check_call", "check_content", "check_loss_switch", "content_text", "json_type", "loss_switch",
           "parse_json_text", "parse_tools", "tool_call"]
