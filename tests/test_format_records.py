"""Record shapes as people have them: the exact normalised messages and tools each one becomes, and the reason
each malformed one is refused with. Stdlib only (no tokenizer), so these run in a blink.

    .venv/bin/pytest tests/test_format_records.py -q
"""

from __future__ import annotations

import json

import pytest

from conftest import write_jsonl
from trainingd.train.formats import DataError, check_record, detect_format, scan_file, to_messages, to_tools

WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
WEATHER_TOOL = {"type": "function", "function": WEATHER}


def normalised(record: dict) -> tuple[list[dict] | None, list[dict] | None]:
    fmt = detect_format(record)
    assert check_record(record, fmt) is None, check_record(record, fmt)
    return to_messages(record, fmt), to_tools(record, fmt)


# ------------------------------------------------------------------------------- OpenAI content parts
def test_openai_content_parts_become_one_string_joined_by_newlines():
    record = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Done."}]}]}
    assert normalised(record) == ([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Part one.\nPart two."},
        {"role": "assistant", "content": "Done."}], None)


@pytest.mark.parametrize("content, reason", [
    ([{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x.png"}}],
     '"messages"[0] "content"[1] has type "image_url" (keys "type", "image_url"); this trainer is text-only: keep '
     'only text parts'),
    (["plain"], '"messages"[0] "content"[0] must be an object like {"type": "text", "text": "..."}, got string'),
    ([{"type": "text", "text": None}],
     '"messages"[0] "content"[0] "text" must be a string, got null (a text part with keys "type", "text")'),
    ({"type": "text", "text": "x"}, '"messages"[0] "content" must be a string, got object (or an array of '
                                    '{"type": "text"} parts)'),
])
def test_content_parts_that_are_not_text_are_refused_naming_the_part(content, reason):
    record = {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}]}
    assert check_record(record, "messages") == reason


# ------------------------------------------------------------------------------- messages with tools
TOOL_CHAT = {
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "reasoning_content": "I should look it up.",
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "{\"temp_c\": 18}"},
        {"role": "assistant", "content": "18 degrees in Paris.", "reasoning_content": "Report it."},
    ],
    "tools": [WEATHER_TOOL],
}


def test_messages_with_tool_calls_tool_results_reasoning_and_tools():
    assert normalised(TOOL_CHAT) == ([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "I should look it up.",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "{\"temp_c\": 18}", "name": "get_weather", "tool_call_id": "call_1"},
        {"role": "assistant", "content": "18 degrees in Paris.", "reasoning_content": "Report it."},
    ], [WEATHER_TOOL])


def test_tool_call_arguments_are_parsed_when_json_and_kept_when_not():
    def args(arguments):
        record = {"messages": [{"role": "user", "content": "go"},
                               {"role": "assistant", "tool_calls": [{"function": {"name": "f", **arguments}}]}]}
        return normalised(record)[0][1]["tool_calls"][0]["function"]["arguments"]

    assert args({"arguments": {"a": 1}}) == {"a": 1}
    assert args({"arguments": "{\"a\": 1}"}) == {"a": 1}
    assert args({"arguments": "not json"}) == "not json"
    assert args({"arguments": "[1, 2]"}) == "[1, 2]"  # JSON, but not an object: kept as given
    assert args({}) == {} and args({"arguments": ""}) == {}
    empty = {"messages": [{"role": "user", "content": "q", "tool_calls": []},
                          {"role": "assistant", "content": "a", "tool_calls": [], "reasoning_content": None}]}
    assert normalised(empty)[0] == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    flat = {"messages": [{"role": "user", "content": "go"},
                         {"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {"a": 1}}]}]}
    assert normalised(flat)[0][1] == {"role": "assistant", "content": "",
                                      "tool_calls": [{"type": "function", "function": {"name": "f",
                                                                                       "arguments": {"a": 1}}}]}


def test_tools_are_accepted_as_openai_tools_bare_schemas_or_a_json_string():
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert to_tools({**chat, "tools": [WEATHER]}, "messages") == [WEATHER_TOOL]
    assert to_tools({**chat, "tools": json.dumps([WEATHER])}, "messages") == [WEATHER_TOOL]
    assert to_tools({**chat, "tools": [WEATHER_TOOL]}, "messages") == [WEATHER_TOOL]
    for none in (None, "", [], "[]"):
        assert to_tools({**chat, "tools": none}, "messages") is None
    assert to_tools(chat, "messages") is None
    assert to_tools({"prompt": "p", "completion": "c"}, "prompt_completion") is None


@pytest.mark.parametrize("message, reason", [
    ({"role": "assistant", "content": None}, '"messages"[1] "content" must be a string, got null (null is allowed '
                                             'only beside "tool_calls")'),
    ({"role": "assistant"}, '"messages"[1] has no "content"'),
    ({"role": "user", "content": "x", "tool_calls": [{"function": {"name": "f"}}]},
     '"messages"[1] has "tool_calls" but role "user"; only assistant messages call tools'),
    ({"role": "assistant", "tool_calls": {"name": "f"}}, '"messages"[1] "tool_calls" must be an array, got object'),
    ({"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]},
     '"messages"[1] "tool_calls"[0] "function" needs a "name" string, got null'),
    ({"role": "assistant", "tool_calls": [{"type": "web_search", "function": {"name": "f"}}]},
     '"messages"[1] "tool_calls"[0] has type "web_search"; only "function" tool calls are supported'),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": 3}}]},
     '"messages"[1] "tool_calls"[0] "function" "arguments" must be an object or a JSON string, got number'),
    ({"role": "user", "content": "x", "reasoning_content": "hm"},
     '"messages"[1] has "reasoning_content" but role "user"; only assistant messages reason'),
    ({"role": "assistant", "content": "x", "reasoning_content": ["hm"]},
     '"messages"[1] "reasoning_content"[0] must be an object like {"type": "text", "text": "..."}, got string'),
    ({"role": "tool", "content": "x", "tool_call_id": 7}, '"messages"[1] "tool_call_id" must be a string, got number'),
    ({"role": "function", "content": "x"}, '"messages"[1] has role "function"; expected system, user, assistant '
                                           'or tool'),
])
def test_bad_tool_messages_are_refused_naming_the_field(message, reason):
    record = {"messages": [{"role": "user", "content": "q"}, message, {"role": "assistant", "content": "a"}]}
    assert check_record(record, "messages") == reason


@pytest.mark.parametrize("tools, reason", [
    ("[{oops", '"tools" is a string but not valid JSON (Expecting property name enclosed in double quotes at '
               'column 3)'),
    (5, '"tools" must be an array of tools (or a JSON string of one), got number'),
    (["get_weather"], '"tools"[0] must be an object, got string'),
    ([{"description": "no name"}], '"tools"[0] needs a "name" string, got null'),
    ([{"type": "function", "function": {"description": "x"}}], '"tools"[0] "function" needs a "name" string, got null'),
    ([{"type": "retrieval"}], '"tools"[0] has type "retrieval"; only "function" tools are supported'),
])
def test_bad_tools_are_refused_naming_the_field(tools, reason):
    for record in ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
                   {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}):
        assert check_record({**record, "tools": tools}, detect_format(record)) == reason


# ------------------------------------------------------------------------------- ShareGPT with tools
GLAIVE = {  # LLaMA-Factory's glaive_toolcall layout
    "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"},
        {"from": "observation", "value": "{\"temp_c\": 18}"},
        {"from": "gpt", "value": "18 degrees in Paris."},
    ],
    "system": "You can call tools.",
    "tools": json.dumps([WEATHER]),
}


def test_sharegpt_function_call_and_observation_become_tool_calls_and_tool_messages():
    assert normalised(GLAIVE) == ([
        {"role": "system", "content": "You can call tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "{\"temp_c\": 18}"},
        {"role": "assistant", "content": "18 degrees in Paris."},
    ], [WEATHER_TOOL])


def test_a_function_call_turn_may_hold_parallel_calls_or_a_parsed_value():
    calls = [{"name": "a", "arguments": {}}, {"name": "b", "arguments": "{\"x\": 1}"}]
    for value in (json.dumps(calls), calls):
        record = {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": value}]}
        assert normalised(record)[0][1]["tool_calls"] == [
            {"type": "function", "function": {"name": "a", "arguments": {}}},
            {"type": "function", "function": {"name": "b", "arguments": {"x": 1}}}]


@pytest.mark.parametrize("value, reason", [
    ("get_weather(Paris)", '"conversations"[1] "value" is not JSON (Expecting value at column 1); a function_call '
                           'turn holds {"name": ..., "arguments": {...}}'),
    ("{\"arguments\": {}}", '"conversations"[1] "value" needs a "name" string, got null'),
    ("[]", '"conversations"[1] "value" is an empty array; a function_call turn holds at least one call'),
    ("[{\"name\": \"a\"}, 3]", '"conversations"[1] "value"[1] must be an object, got number'),
])
def test_a_bad_function_call_turn_is_refused_with_the_layout_it_needs(value, reason):
    record = {"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": value},
                                {"from": "gpt", "value": "a"}]}
    assert check_record(record, "sharegpt") == reason


# ------------------------------------------------------------------------------- the per-message loss switch
def test_train_and_loss_weight_become_one_train_flag_only_where_set():
    record = {"messages": [{"role": "user", "content": "q1"},
                           {"role": "assistant", "content": "a1", "train": False},
                           {"role": "user", "content": "q2", "loss_weight": 1.0},
                           {"role": "assistant", "content": "a2", "loss_weight": 0},
                           {"role": "assistant", "content": "a3", "train": True, "loss_weight": 1}]}
    assert [m.get("train") for m in normalised(record)[0]] == [None, False, True, False, True]
    assert "train" not in normalised(record)[0][0]
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a", "train": False},
                                  {"from": "human", "value": "q"}, {"from": "gpt", "value": "b", "loss_weight": 1}]}
    assert [m.get("train") for m in normalised(sharegpt)[0]] == [None, False, None, True]


@pytest.mark.parametrize("switch, reason", [
    ({"loss_weight": 0.5}, '"messages"[1] "loss_weight" must be 0 or 1 (only 0 or 1 are supported), got 0.5'),
    ({"loss_weight": 2}, '"messages"[1] "loss_weight" must be 0 or 1 (only 0 or 1 are supported), got 2'),
    ({"loss_weight": True}, '"messages"[1] "loss_weight" must be 0 or 1 (only 0 or 1 are supported), got true'),
    ({"loss_weight": "0"}, '"messages"[1] "loss_weight" must be 0 or 1 (only 0 or 1 are supported), got "0"'),
    ({"train": "no"}, '"messages"[1] "train" must be true or false, got string'),
    ({"train": 0}, '"messages"[1] "train" must be true or false, got number'),
    ({"train": True, "loss_weight": 0}, '"messages"[1] has "train": true but "loss_weight": 0; give one'),
])
def test_a_bad_loss_switch_is_refused(switch, reason):
    record = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", **switch}]}
    assert check_record(record, "messages") == reason
    turns = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a", **switch}]}
    assert check_record(turns, "sharegpt") == reason.replace('"messages"', '"conversations"')


# ------------------------------------------------------------------------------- Alpaca as LLaMA-Factory has it
def test_alpaca_with_system_and_history_becomes_a_multi_turn_chat():
    record = {"instruction": "And 3 + 4?", "input": "", "output": "7", "system": "You add numbers.",
              "history": [["1 + 1?", "2"], ["2 + 2?", "4"]]}
    assert normalised(record) == ([
        {"role": "system", "content": "You add numbers."},
        {"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"},
        {"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 4?"}, {"role": "assistant", "content": "7"}], None)
    assert normalised({"instruction": "i", "output": "o", "history": None, "system": None})[0] == [
        {"role": "user", "content": "i"}, {"role": "assistant", "content": "o"}]


@pytest.mark.parametrize("extra, reason", [
    ({"history": "1+1=2"}, '"history" must be an array of [instruction, response] pairs, got string'),
    ({"history": [["q"]]}, '"history"[0] must be an [instruction, response] pair of strings, got an array of 1'),
    ({"history": [["q", None]]}, '"history"[0] must be an [instruction, response] pair of strings, got '
                                 '[string, null]'),
    ({"history": [{"q": "a"}]}, '"history"[0] must be an [instruction, response] pair of strings, got object'),
    ({"system": 3}, '"system" must be a string, got number'),
])
def test_bad_alpaca_history_or_system_is_refused(extra, reason):
    assert check_record({"instruction": "i", "output": "o", **extra}, "alpaca") == reason


# ------------------------------------------------------------------------------- through the file scan
def test_scan_file_accepts_each_new_shape_and_numbers_the_bad_lines(tmp_path):
    assert scan_file(write_jsonl(tmp_path / "tools.jsonl", [TOOL_CHAT] * 3)).format == "messages"
    assert scan_file(write_jsonl(tmp_path / "glaive.jsonl", [GLAIVE] * 3)).format == "sharegpt"
    bad = dict(GLAIVE, tools="not json")
    with pytest.raises(DataError) as info:
        scan_file(write_jsonl(tmp_path / "bad.jsonl", [GLAIVE, bad, GLAIVE]))
    assert str(info.value) == ('line 2: "tools" is a string but not valid JSON (Expecting value at column 1)')
