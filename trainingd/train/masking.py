"""Loss masks through the tokenizer's own chat template: chat messages or raw text -> (input_ids, labels).

Real chat templates are not prefix-stable (Qwen3 drops the reasoning of earlier assistant turns and renders an
empty ``<think>`` block in front of the last one; SmolLM2 adds a default system prompt; Llama 3 adds date
headers; Gemma folds the system prompt into the first user turn), so the mask is not built from renders of
conversation prefixes. Each conversation is rendered once, in full, and each trained message is located in
that one render by difference: the conversation is rendered again with that message's content replaced by a
sentinel (its reasoning and tool calls removed), and the characters where the two renders differ are what the
message itself contributes. The message's end-of-turn marker (the text the template closes every turn with,
learnt once per tokenizer from two probe renders) is trained with it, so the model learns to stop. A plain-text
conversation whose render is the template's cached skeleton for its roles with every content written verbatim
is located by that one comparison, without the extra renders (the common case, and the fast one).

What is trained, then, is exactly what the message says as the template renders it: its content (as the
template writes it: Llama 3 trims it, for instance), its tool calls, its reasoning where the template renders
reasoning, and its end-of-turn token. Scaffolding that the template writes around every turn whatever its
content is never trained: role headers, default system prompts, date headers, and Qwen3's empty
``<think>\\n\\n</think>\\n\\n`` in front of an answer without reasoning. For Qwen3 in particular:

- an assistant message with ``reasoning_content`` (or ``<think>…</think>`` at the start of its content) after
  the last user turn is trained from its reasoning to its ``<|im_end|>``: ``reasoning\\n</think>\\n\\nanswer``;
  the opening ``<think>\\n`` is scaffolding the template writes in front of every such turn;
- in earlier turns the template drops the reasoning, so only the answer is rendered and trained;
- the empty think block in front of an answer without reasoning is context, not a target: a model trained on
  plain answers keeps its own reasoning mode and answers directly after an empty think block
  (``enable_thinking=False``), as the template renders it at inference.

By default assistant messages are trained (``train_on: "completion"``); a message's ``"train": true|false``
overrides that for the one message, whatever its role. ``train_on: "all"`` trains every token. A line whose
messages cannot be located in the render raises DataError naming the line. Every example's first label is -100.

    from trainingd.train.masking import Encoder
    (ids, labels), = Encoder(tokenizer, "completion").encode_chats([messages], lines=[1])
"""

from __future__ import annotations

import bisect
import logging
import re
from trainingd.train.formats import DataError

log = logging.getLogger(__name__)

IGNORE = -100
# Private-use characters: no real text starts or ends with them, so a render's difference from the sentinel
# render starts and ends exactly at the message's own text.
SENTINELS = ("\ue000\ue001\ue002", "\ue003\ue004\ue005")


def tokenizer_name(tokenizer) -> str:
    """The tokenizer's folder or hub name, for messages."""
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of two strings."""
    n = min(len(a), len(b))
    lo, hi = 0, n
    while lo < hi:  # binary search on slices: C-speed comparisons instead of a Python loop per character
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix of two strings, at most ``limit``."""
    lo, hi = 0, min(len(a), len(b), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid:] == b[len(b) - mid:]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _for_template(message: dict) -> dict:
    """A message as the template sees it: the loss switch is ours, not the template's."""
    return {k: v for k, v in message.items() if k != "train"}


def is_trained(message: dict) -> bool:
    """Whether a message carries loss under ``train_on: "completion"``."""
    train = message.get("train")
    return bool(train) if train is not None else message.get("role") == "assistant"


class Encoder:
    """Turns chat messages or raw text into (input_ids, labels) with per-message loss masks."""

    def __init__(self, tokenizer, train_on: str):
        if train_on not in ("completion", "all"):
            raise ValueError(f"train_on must be 'completion' or 'all', got {train_on!r}")
        self.tok = tokenizer
        self.train_on = train_on
        self.eos = tokenizer.eos_token_id
        self._compiled = self._compile()
        self._turn_end: str | None = None
        self._checked = False  # whether the direct render was compared with apply_chat_template
        self._skeletons: dict[tuple[str, ...], list[str] | None] = {}

    def _compile(self):
        """The tokenizer's compiled chat template, to render plain messages without apply_chat_template's
        per-call normalisation (a third of the rendering time); None to always use apply_chat_template."""
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            return _compile_jinja_template(self.tok.get_chat_template())
        except Exception:  # noqa: BLE001 - no template, or a transformers without this helper: the slow path
            return None

    def _render_one(self, messages: list[dict], tools: list | None) -> str:
        if self._compiled is not None:
            return self._compiled.render(messages=messages, tools=tools, documents=None,
                                         add_generation_prompt=False, **self.tok.special_tokens_map)
        return self.tok.apply_chat_template(messages, tools=tools, tokenize=False)

    def render(self, messages: list[dict], tools: list | None = None) -> str:
        """One conversation through the chat template (the loss switches removed)."""
        messages = [_for_template(m) for m in messages]
        if self._compiled is not None:
            # The direct render must agree with apply_chat_template once; otherwise use the latter for good.
            text = self._render_one(messages, tools)
            if self._checked:
                return text
            reference = self.tok.apply_chat_template(messages, tools=tools, tokenize=False)
            self._checked = True
            if text == reference:
                return text
            log.warning("direct chat-template rendering differs from apply_chat_template; using the latter")
            self._compiled = None
            return reference
        return self._render_one(messages, tools)

    def turn_end(self) -> str:
        """The text the template closes a turn with (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``), without
        the whitespace after it: what follows an assistant turn both when it ends the conversation and when a user
        turn follows. Empty when the template closes turns with nothing."""
        if self._turn_end is None:
            s = SENTINELS[0]
            try:
                last = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": s}])
                more = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": s},
                                    {"role": "user", "content": "ok"}])
                after_last, after_more = last[last.rindex(s) + len(s):], more[more.rindex(s) + len(s):]
                self._turn_end = after_last[:common_prefix(after_last, after_more)].rstrip()
            except Exception:  # noqa: BLE001 - a template that refuses the probe: fall back on the eos token
                self._turn_end = self.tok.eos_token or ""
        return self._turn_end

    def _backend(self):
        """The `tokenizers` object when calling it directly gives what ``tokenizer(texts)`` gives (no padding or
        truncation configured on it): that skips a per-text conversion costing as much as the encoding."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is None or backend.truncation is not None or backend.padding is not None:
            return None
        return backend

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
        """Token ids of each text (no special tokens added) and each token's character span."""
        if not texts:
            return [], []
        backend = self._backend()
        if backend is not None:
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            return [e.ids for e in encodings], [e.offsets for e in encodings]
        out = self.tok(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [list(ids) for ids in out["input_ids"]], [list(map(tuple, o)) for o in out["offset_mapping"]]

    def encode_texts(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """Raw text: its tokens + eos, all trained (but the first, which nothing precedes)."""
        out = []
        for ids in self.tok(texts, add_special_tokens=True)["input_ids"]:
            ids = list(ids)
            if self.eos is not None and (not ids or ids[-1] != self.eos):
                ids.append(self.eos)
            labels = list(ids)
            if labels:
                labels[0] = IGNORE
            out.append((ids, labels))
        return out

    def _special_ids(self) -> set[int]:
        ids = set(self.tok.all_special_ids)
        ids.update(getattr(self.tok, "added_tokens_decoder", {}) or {})
        return ids

    def trained_spans(self, messages: list[dict], tools: list | None, full: str,
                      line: int) -> list[tuple[int, int, int]]:
        """Per trained message: ``(start, end, marker_end)``, character offsets into ``full`` (the render of
        ``messages``): its own text is ``full[start:end]``, and the end-of-turn marker follows up to
        ``marker_end``."""
        spans = []
        end_marker = self.turn_end()
        verbatim = self._verbatim_spans(messages, tools, full)
        for i, m in enumerate(messages):
            if not is_trained(m):
                continue
            if verbatim is not None:
                lo, hi = verbatim[i]
                spans.append((lo, hi, hi + len(end_marker) if full.startswith(end_marker, hi) else hi))
                continue
            sentinel = next((s for s in SENTINELS if s not in full), None)
            if sentinel is None:
                raise DataError(f"line {line}: messages contain the masking sentinel characters U+E000..U+E005",
                                [{"line": line, "error": "sentinel characters in the text"}], {"bad_lines": 1})
            lo, hi, found = self._locate(messages, i, tools, full, sentinel, line)
            if not found:
                raise DataError(
                    f"line {line}: cannot locate {m['role']} message {i} in the chat template's rendering of the "
                    f"conversation (tokenizer {tokenizer_name(self.tok)}), so its loss mask cannot be computed",
                    [{"line": line, "error": f"message {i} not found in the rendered conversation"}],
                    {"bad_lines": 1})
            if lo == hi and (m.get("content") or m.get("tool_calls")):
                raise DataError(
                    f"line {line}: the chat template of tokenizer {tokenizer_name(self.tok)} does not render "
                    f"{m['role']} message {i}, so it cannot be trained",
                    [{"line": line, "error": f"message {i} is not rendered by the chat template"}],
                    {"bad_lines": 1})
            for j in range(i + 1, len(messages)) if m.get("tool_calls") else ():
                if messages[j]["role"] != "tool":
                    break
                t_lo, _, t_found = self._locate(messages, j, tools, full, sentinel, line)
                if t_found and t_lo < hi:
                    # Gemma 4 renders tool results inside the assistant turn that called the tool: the result
                    # would be trained as if the model had written it.
                    raise DataError(
                        f"line {line}: the chat template of tokenizer {tokenizer_name(self.tok)} renders the tool "
                        f"result (message {j}) inside the assistant turn that called it (message {i}), so the "
                        "tool result cannot be kept out of the loss; train such conversations with "
                        "\"train_on\": \"all\" or on a model whose template renders tool results as their own turn",
                        [{"line": line, "error": f"tool result {j} is rendered inside assistant message {i}"}],
                        {"bad_lines": 1})
            marker_end = hi + len(end_marker) if full.startswith(end_marker, hi) else hi
            spans.append((lo, hi, marker_end))
        return spans

    def _skeleton(self, roles: tuple[str, ...]) -> list[str] | None:
        """The template's text around the messages of a conversation with these roles: ``[P0, ..., Pn]`` such
        that a conversation whose contents the template writes verbatim renders as ``P0 c0 P1 c1 ... Pn``.
        None when the template does not write placeholder contents verbatim, in order, once each."""
        if roles not in self._skeletons:
            if len(self._skeletons) >= 1024:
                self._skeletons.clear()
            marks = [f"\ue010{i}\ue011" for i in range(len(roles))]
            try:
                text = self.render([{"role": r, "content": c} for r, c in zip(roles, marks)])
            except Exception:  # noqa: BLE001 - the template refuses this shape: every line takes the slow path
                text = ""
            parts = re.split("\ue010\\d+\ue011", text)
            ok = re.findall("\ue010\\d+\ue011", text) == marks
            self._skeletons[roles] = parts if ok else None
        return self._skeletons[roles]

    def _verbatim_spans(self, messages: list[dict], tools: list | None, full: str) -> list[tuple[int, int]] | None:
        """Where each message's content lies in ``full``, when the conversation is plain text (no tools, tool
        calls or reasoning) and ``full`` is exactly the template's skeleton for its roles with each content
        written verbatim: one string comparison instead of a render per message. None otherwise (the caller
        then locates each message by difference)."""
        if tools or any(len(m) > 2 + ("train" in m) for m in messages):
            return None
        skeleton = self._skeleton(tuple(m["role"] for m in messages))
        if skeleton is None or len(skeleton) != len(messages) + 1:
            return None
        spans, pos = [], 0
        for part, m in zip(skeleton, messages):
            if not full.startswith(part, pos):
                return None
            pos += len(part)
            if not full.startswith(m["content"], pos):
                return None
            spans.append((pos, pos + len(m["content"])))
            pos += len(m["content"])
        return spans if full.startswith(skeleton[-1], pos) and pos + len(skeleton[-1]) == len(full) else None

    def _locate(self, messages: list[dict], i: int, tools: list | None, full: str, sentinel: str,
                line: int) -> tuple[int, int, bool]:
        """``(start, end, found)``: where message i's own text lies in ``full``, by difference with a render in
        which its content is ``sentinel`` (and its reasoning and tool calls are gone); ``found`` is False when
        the difference does not hold the sentinel (the template did not render that message)."""
        variant = list(messages)
        variant[i] = {"role": messages[i]["role"], "content": sentinel}
        try:
            other = self.render(variant, tools)
        except Exception as e:  # noqa: BLE001 - the template's own check (gpt-oss: a tool result needs a call)
            raise DataError(
                f"line {line}: the chat template of tokenizer {tokenizer_name(self.tok)} cannot render the "
                f"conversation with message {i} as plain text ({type(e).__name__}: {e}), so message {i} cannot be "
                "located for its loss mask",
                [{"line": line, "error": f"message {i} cannot be located: {e}"}], {"bad_lines": 1}) from None
        lo = common_prefix(full, other)
        tail = common_suffix(full, other, min(len(full), len(other)) - lo)
        return lo, len(full) - tail, other.find(sentinel, lo, len(other) - tail) >= 0

    def _label_turn(self, ids: list[int], offsets: list[tuple[int, int]], ends: list[int], labels: list[int],
                    full: str, span: tuple[int, int, int], special: set[int]) -> None:
        """Label one message's tokens: those overlapping its text, then its end-of-turn marker's."""
        lo, hi, marker_end = span
        n = len(ids)
        first = k = bisect.bisect_right(ends, lo)  # the first token ending after ``lo``
        while k < n and offsets[k][0] < hi:
            k += 1
        j = k
        while j < n and offsets[j][1] <= marker_end and offsets[j][0] < marker_end:
            j += 1  # tokens wholly inside the marker
        if j < n and offsets[j][0] <= marker_end and ids[j] in special and not special.intersection(ids[k:j]):
            # The marker differs between a final and a middle turn (gpt-oss: <|return|> / <|end|>), or the
            # template has none (GLM: the next turn's <|user|> is the stop token): the added token where the
            # common part ends is the turn's end.
            j += 1
        while j > k and ids[j - 1] not in special and not full[offsets[j - 1][0]:offsets[j - 1][1]].strip():
            j -= 1  # the whitespace after a turn is never generated
        labels[first:j] = ids[first:j]

    def encode_chats(self, convs: list[list[dict]], lines: list[int],
                     tools: list[list | None] | None = None) -> list[tuple[list[int], list[int]]]:
        """Chat conversations through the chat template; loss on trained messages (or on all tokens).
        ``tools[c]`` is conversation c's tool list (or None), passed to the template."""
        tools = tools if tools is not None else [None] * len(convs)
        full_texts = [self.render(msgs, t) for msgs, t in zip(convs, tools)]
        all_ids, all_offsets = self._encode(full_texts)
        special = self._special_ids()
        out = []
        for msgs, t, line, full, ids, offsets in zip(convs, tools, lines, full_texts, all_ids, all_offsets):
            ids = list(ids)
            if self.train_on == "all":
                labels = list(ids)
            else:
                labels = [IGNORE] * len(ids)
                ends = [e for _, e in offsets]
                for span in self.trained_spans(msgs, t, full, line):
                    self._label_turn(ids, offsets, ends, labels, full, span, special)
            if labels:
                labels[0] = IGNORE
            out.append((ids, labels))
        return out


def trained_text(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of trained tokens, one string per contiguous run (for reports and tests)."""
    runs: list[list[int]] = []
    previous = False
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            if not previous:
                runs.append([])
            runs[-1].append(i)
        previous = lab != IGNORE
    return [tokenizer.decode(r) for r in runs]
