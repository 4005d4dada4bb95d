"""Formats and loss masks: every accepted record shape, checked token by token.

    .venv/bin/pytest tests/test_data_formats.py -q
"""

from __future__ import annotations

import pytest

from conftest import write_jsonl
from trainingd.config import Config
from trainingd.train.data import FORMATS, DataError, Encoder, detect_format, prepare_dataset, to_messages
from trainingd.train.formats import to_tools
from trainingd.train.masking import trained_text

IGNORE = -100

# One example per format; the assistant/completion/output text is "Hello world" in each.
EXAMPLES = {
    "messages": {"system": "Be brief.",
                 "messages": [{"role": "user", "content": "Explain the queue"},
                              {"role": "assistant", "content": "Hello world"}]},
    "prompt_completion": {"prompt": "Add two numbers", "completion": "Hello world"},
    "alpaca": {"instruction": "Add two numbers", "input": "One two three.", "output": "Hello world"},
    "sharegpt": {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Say yes"},
                                   {"from": "gpt", "value": "Hello world"}]},
    "text": {"text": "The sun is a star."},
}


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def trained_strings(tokenizer, fmt: str, record: dict, train_on: str) -> tuple[list[str], list[str]]:
    """(decoded tokens that carry loss, all decoded tokens) for one record."""
    enc = Encoder(tokenizer, train_on)
    if fmt == "text":
        ((ids, labels),) = enc.encode_texts([record["text"]])
    else:
        ((ids, labels),) = enc.encode_chats([to_messages(record, fmt)], [1], [to_tools(record, fmt)])
    assert len(ids) == len(labels)
    assert all(lab in (IGNORE, i) for i, lab in zip(ids, labels)), "labels must be the input ids or -100"
    return ([tokenizer.decode([i]) for i, lab in zip(ids, labels) if lab != IGNORE],
            [tokenizer.decode([i]) for i in ids])


def test_detect_format_recognises_every_shape():
    assert [detect_format(EXAMPLES[f]) for f in FORMATS] == list(FORMATS)
    assert detect_format({"instruction": "x", "output": "y"}) == "alpaca"


def test_detect_format_names_the_keys_it_saw():
    with pytest.raises(ValueError, match=r"keys 'question', 'answer'"):
        detect_format({"question": "q", "answer": "a"})


def test_to_messages_maps_every_chat_format_to_user_and_assistant_turns():
    assert to_messages(EXAMPLES["messages"], "messages") == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Explain the queue"},
        {"role": "assistant", "content": "Hello world"}]
    assert to_messages(EXAMPLES["prompt_completion"], "prompt_completion") == [
        {"role": "user", "content": "Add two numbers"}, {"role": "assistant", "content": "Hello world"}]
    assert to_messages(EXAMPLES["alpaca"], "alpaca")[0] == {"role": "user",
                                                             "content": "Add two numbers\n\nOne two three."}
    assert to_messages({"instruction": "Add", "input": "", "output": "x"}, "alpaca")[0]["content"] == "Add"
    assert to_messages({"instruction": "Add", "output": "x"}, "alpaca")[0]["content"] == "Add"
    assert [m["role"] for m in to_messages(EXAMPLES["sharegpt"], "sharegpt")] == ["system", "user", "assistant"]
    assert to_messages(EXAMPLES["text"], "text") is None


@pytest.mark.parametrize("fmt", ["messages", "prompt_completion", "alpaca", "sharegpt"])
def test_completion_loss_is_exactly_the_assistant_text_and_its_end_of_turn_token(tokenizer, fmt):
    trained, _ = trained_strings(tokenizer, fmt, EXAMPLES[fmt], "completion")
    assert trained == ["Hello", " world", "<|im_end|>"]


def test_raw_text_trains_every_token_and_the_eos_in_both_modes(tokenizer):
    for train_on in ("completion", "all"):
        trained, _ = trained_strings(tokenizer, "text", EXAMPLES["text"], train_on)
        # The first token has no previous token to be predicted from, so its label is -100.
        assert trained == [" sun", " is", " a", " star", ".", "<|im_end|>"]


@pytest.mark.parametrize("fmt", ["messages", "prompt_completion", "alpaca", "sharegpt"])
def test_train_on_all_puts_loss_on_every_token_but_the_first(tokenizer, fmt):
    trained, everything = trained_strings(tokenizer, fmt, EXAMPLES[fmt], "all")
    assert trained == everything[1:]
    assert everything[0] == "<|im_start|>"
    assert trained.count("<|im_start|>") == len(to_messages(EXAMPLES[fmt], fmt)) - 1


def test_every_assistant_turn_of_a_multi_turn_conversation_is_trained(tokenizer):
    record = {"messages": [{"role": "user", "content": "Say yes"}, {"role": "assistant", "content": "Yes"},
                           {"role": "user", "content": "Explain the queue"},
                           {"role": "assistant", "content": "A tiny dog."},
                           {"role": "user", "content": "Hello world"}]}
    trained, everything = trained_strings(tokenizer, "messages", record, "completion")
    assert trained == ["Yes", "<|im_end|>", "A", " tiny", " dog", ".", "<|im_end|>"]
    assert everything[-3:] == [" world", "<|im_end|>", "\n"]  # the trailing user turn is context only


def test_an_assistant_turn_opening_the_conversation_is_trained_without_its_header(tokenizer):
    record = {"messages": [{"role": "assistant", "content": "Hello world"}]}
    trained, everything = trained_strings(tokenizer, "messages", record, "completion")
    assert everything[0] == "<|im_start|>" and "".join(everything).startswith("<|im_start|>assistant\n")
    assert trained == ["Hello", " world", "<|im_end|>"]


def test_a_template_that_is_not_prefix_stable_still_trains_exactly_each_assistant_message(tokenizer, tmp_path):
    # Renders the last message differently from the same message followed by others (as Qwen3's template
    # does with its think block): prefix renders are then not token prefixes of the whole conversation.
    unstable = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    unstable.chat_template = (
        "{%- for m in messages %}{%- if loop.last %}{{- 'LAST ' }}{%- endif %}"
        "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    record = {"messages": [{"role": "user", "content": "Say yes"}, {"role": "assistant", "content": "Yes"},
                           {"role": "user", "content": "Explain the queue"},
                           {"role": "assistant", "content": "A tiny dog."}]}
    ((ids, labels),) = Encoder(unstable, "completion").encode_chats([to_messages(record, "messages")], [1])
    assert trained_text(unstable, ids, labels) == ["Yes<|im_end|>", "A tiny dog.<|im_end|>"]
    path = write_jsonl(tmp_path / "chat.jsonl", [record] * 3)
    assert prepare_dataset(path, unstable, Config(max_length=128), tmp_path / "cache").report["kept"] == 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_prepare_dataset_detects_and_reports_each_format(tokenizer, tmp_path, fmt):
    path = write_jsonl(tmp_path / f"{fmt}.jsonl", [EXAMPLES[fmt]] * 4)
    prepared = prepare_dataset(path, tokenizer, Config(max_length=128), tmp_path / "cache")
    assert prepared.report["format"] == fmt
    assert prepared.report["examples"] == prepared.report["kept"] == len(prepared.train) == 4
    row = prepared.train[0]
    assert row["length"] == len(row["input_ids"]) == len(row["labels"])
    expected = 6 if fmt == "text" else 3
    assert prepared.report["trained_tokens"] == 4 * expected


CHATML = ("{%- for message in messages %}"
          "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
          "{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def reference_labels(tokenizer, msgs: list[dict]) -> tuple[list[int], list[int]]:
    """The loss mask computed the slow, obvious way for a prefix-stable template: tokenize every prefix in full
    and diff."""
    def ids(conv: list[dict], gen: bool) -> list[int]:
        text = tokenizer.apply_chat_template([conv], tokenize=False, add_generation_prompt=gen)[0]
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    full = ids(msgs, False)
    labels = [IGNORE] * len(full)
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start, end = ids(msgs[:i], True), ids(msgs[:i + 1], False)
        assert full[:len(start)] == start and full[:len(end)] == end
        hi = len(end)
        while full[hi - 1] != tokenizer.eos_token_id:  # stop after the end-of-turn token
            hi -= 1
        labels[len(start):hi] = full[len(start):hi]
    labels[0] = IGNORE
    return full, labels


def test_masking_matches_tokenizing_every_prefix_on_a_prefix_stable_template(tokenizer):
    import random

    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    tokenizer.chat_template = CHATML

    rng = random.Random(11)
    pieces = ["Hello", " world", "the queue", "😀", "数据", "  spaced  ", "\n\nnew lines\n", "", "<|im_end|>x",
              "caf\u00e9", "tabs\tand\rreturns", "1234", "a" * 40]
    convs = []
    for _ in range(60):
        msgs = [{"role": "system", "content": rng.choice(pieces)}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 4)):
            msgs.append({"role": "user", "content": "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))})
            msgs.append({"role": "assistant",
                         "content": "".join(rng.choice(pieces) for _ in range(rng.randint(0, 4)))})
        if rng.random() < 0.2:
            msgs = msgs[1:] if msgs[0]["role"] == "user" else msgs
        convs.append(msgs)
    got = Encoder(tokenizer, "completion").encode_chats(convs, list(range(1, 61)))
    assert len(got) == len(convs) == 60, "an empty result would pass the comparison below"
    for msgs, (ids, labels) in zip(convs, got, strict=True):
        assert (ids, labels) == reference_labels(tokenizer, msgs), msgs


def test_prepare_refuses_a_chat_file_when_the_tokenizer_has_no_chat_template(tokenizer, tmp_path):
    bare = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    path = write_jsonl(tmp_path / "chat.jsonl", [EXAMPLES["messages"]])
    with pytest.raises(DataError, match=r"has no chat template, which the messages format needs"):
        prepare_dataset(path, bare, Config(max_length=128), tmp_path / "cache")
    text = write_jsonl(tmp_path / "text.jsonl", [EXAMPLES["text"]])
    assert prepare_dataset(text, bare, Config(max_length=128), tmp_path / "cache").report["kept"] == 1


def test_conversations_the_template_rejects_are_bad_lines_with_numbers(tokenizer, tmp_path):
    strict = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    strict.chat_template = (
        "{%- for m in messages %}{%- if m['role'] == 'system' and not loop.first %}"
        "{{- raise_exception('the system message must come first') }}{%- endif %}"
        "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    late_system = {"messages": [{"role": "user", "content": "Say yes"}, {"role": "system", "content": "Be brief."},
                                {"role": "assistant", "content": "Yes"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [EXAMPLES["messages"], late_system, EXAMPLES["messages"],
                                                 late_system])
    with pytest.raises(DataError) as info:
        prepare_dataset(path, strict, Config(max_length=128), tmp_path / "cache")
    assert str(info.value).startswith("2 bad lines: line 2: chat template failed: ")
    assert "the system message must come first" in str(info.value)
    assert [d["line"] for d in info.value.details] == [2, 4]
    assert not list((tmp_path / "cache").iterdir())


# Formats as people have them: each file prepares, and the loss falls on the answers only.
PEOPLE_HAVE = {
    "content_parts": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Explain"},
                                                                {"type": "text", "text": "the queue"}]},
                                   {"role": "assistant", "content": [{"type": "text", "text": "Hello world"}]}]},
    "alpaca_history": {"instruction": "Say yes", "input": "", "output": "Hello world", "system": "Be brief.",
                       "history": [["Add two numbers", "A tiny dog."]]},
    "messages_tools": {"messages": [
        {"role": "user", "content": "Explain the queue"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "lookup", "arguments": "{\"q\": \"queue\"}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "the queue data"},
        {"role": "assistant", "content": "Hello world"}],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]},
    "sharegpt_tools": {"conversations": [
        {"from": "human", "value": "Explain the queue"},
        {"from": "function_call", "value": "{\"name\": \"lookup\", \"arguments\": {\"q\": \"queue\"}}"},
        {"from": "observation", "value": "the queue data"},
        {"from": "gpt", "value": "Hello world"}],
        "tools": "[{\"name\": \"lookup\", \"parameters\": {\"type\": \"object\"}}]"},
}


@pytest.mark.parametrize("name", sorted(PEOPLE_HAVE))
def test_formats_people_have_prepare_and_train_only_answers(tokenizer, tmp_path, name):
    record = PEOPLE_HAVE[name]
    path = write_jsonl(tmp_path / f"{name}.jsonl", [record] * 3)
    # Qwen3's template writes the tool list into a long system prompt: room for it.
    prepared = prepare_dataset(path, tokenizer, Config(max_length=1024), tmp_path / "cache")
    assert prepared.report["examples"] == prepared.report["kept"] == 3
    trained, everything = trained_strings(tokenizer, detect_format(record), record, "completion")
    text = "".join(trained)
    assert text.endswith("Hello world<|im_end|>")
    if name.endswith("_tools"):  # the call is the model's output; the tool list and the result are context
        assert text == ('<tool_call>\n{"name": "lookup", "arguments": {"q": "queue"}}\n</tool_call><|im_end|>'
                        "Hello world<|im_end|>")
        assert "# Tools" in "".join(everything)
        return
    for context in ("Explain", "queue", "Say yes", "Be brief"):
        assert context not in text, (context, text)
    if name == "alpaca_history":
        assert text == "A tiny dog.<|im_end|>Hello world<|im_end|>"
