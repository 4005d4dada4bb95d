"""Loss masks through the tokenizer's own chat template: chat messages or raw text -> (input_ids, labels).

Message i's tokens are the difference between rendering ``messages[:i]`` with the generation prompt and
rendering ``messages[:i+1]``; both must be token prefixes of the whole conversation (the template is
"prefix-stable"), or DataError names the tokenizer. An assistant span keeps its end-of-turn token (the model
must learn to stop) but not the template's whitespace after it. Every example's first label is -100.

    from trainingd.train.masking import Encoder
    (ids, labels), = Encoder(tokenizer, "completion").encode_chats([messages], lines=[1])
"""

from __future__ import annotations

import logging

from trainingd.train.formats import DataError

log = logging.getLogger(__name__)

IGNORE = -100


def tokenizer_name(tokenizer) -> str:
    """The tokenizer's folder or hub name, for messages."""
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


class Encoder:
    """Turns chat messages or raw text into (input_ids, labels) with per-message loss masks."""

    def __init__(self, tokenizer, train_on: str):
        if train_on not in ("completion", "all"):
            raise ValueError(f"train_on must be 'completion' or 'all', got {train_on!r}")
        self.tok = tokenizer
        self.train_on = train_on
        self.eos = tokenizer.eos_token_id
        self._compiled = self._compile()

    def _compile(self):
        """The tokenizer's compiled chat template, to render plain messages without apply_chat_template's
        per-message normalisation (a third of the rendering time); None to always use apply_chat_template."""
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            return _compile_jinja_template(self.tok.get_chat_template())
        except Exception:  # noqa: BLE001 - no template, or a transformers without this helper: the slow path
            return None

    def _render(self, convs: list[list[dict]], gen: bool) -> list[str]:
        if not convs:
            return []
        # A batched call renders all conversations in one go, and accepts an empty prefix (an assistant turn
        # that opens the conversation), which the unbatched form refuses.
        reference = self.tok.apply_chat_template(convs[:1], tokenize=False, add_generation_prompt=gen)
        if self._compiled is not None:
            extra = dict(self.tok.special_tokens_map)
            texts = [self._compiled.render(messages=m, tools=None, documents=None, add_generation_prompt=gen,
                                           **extra) for m in convs]
            if texts[:1] == reference:
                return texts
            log.warning("direct chat-template rendering differs from apply_chat_template; using the latter")
            self._compiled = None
        return reference + self.tok.apply_chat_template(convs[1:], tokenize=False, add_generation_prompt=gen) \
            if len(convs) > 1 else reference

    def _backend(self):
        """The `tokenizers` object when calling it directly gives what ``tokenizer(texts)`` gives (no padding or
        truncation configured on it): that skips a per-text conversion costing as much as the encoding."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is None or backend.truncation is not None or backend.padding is not None:
            return None
        return backend

    def _encode(self, texts: list[str]) -> tuple[list[list[int]], list | None]:
        """Token ids of each text (no special tokens added) and, from a fast tokenizer, its Encodings."""
        if not texts:
            return [], []
        backend = self._backend()
        if backend is not None:
            encodings = backend.encode_batch(texts, add_special_tokens=False)
            return [e.ids for e in encodings], encodings
        out = self.tok(texts, add_special_tokens=False)
        return [list(ids) for ids in out["input_ids"]], getattr(out, "encodings", None)

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self._encode(texts)[0]

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

    def _prefix_lengths(self, fulls: list[list[int]], encodings: list | None, full_texts: list[str],
                        prefixes: list[str], owners: list[int]) -> list[int | None]:
        """For each prefix text of conversation ``owners[k]``: its token count when its token ids are exactly
        a prefix of the conversation's ids, else None.

        Tokenizing every prefix costs O(turns^2) text, so when the prefix is a string prefix ending on a token
        boundary, only its tail from the last special token is re-tokenized: `tokenizers` splits added tokens
        out before normalizing and pre-tokenizing, so the tokens before that special token cannot differ.
        Whatever this shortcut cannot confirm is checked by tokenizing the whole prefix.
        """
        result: list[int | None] = [None] * len(prefixes)
        exact: list[int] = []
        tails: list[str] = []
        tail_meta: list[tuple[int, list[int], int]] = []
        special = self._special_ids() if encodings is not None else set()
        for k, (text, c) in enumerate(zip(prefixes, owners)):
            full_text, ids = full_texts[c], fulls[c]
            if encodings is None or not full_text.startswith(text):
                exact.append(k)
                continue
            b = len(text)
            if b == len(full_text):
                result[k] = len(ids)
                continue
            enc = encodings[c]
            t = enc.char_to_token(b)
            if t is None or enc.token_to_chars(t)[0] != b or (t > 0 and enc.token_to_chars(t - 1)[1] > b):
                exact.append(k)  # the boundary falls inside a token: almost surely not prefix-stable
                continue
            j = t - 1
            while j >= 0 and ids[j] not in special:
                j -= 1
            if j < 0:
                tails.append(text)
                tail_meta.append((k, ids[:t], t))
            else:
                tails.append(full_text[enc.token_to_chars(j)[0]:b])
                tail_meta.append((k, ids[j:t], t))
        for (k, expected, t), got in zip(tail_meta, self._ids(tails)):
            if list(got) == expected:
                result[k] = t
            else:
                exact.append(k)
        for k, got in zip(exact, self._ids([prefixes[k] for k in exact])):
            ids = fulls[owners[k]]
            if ids[:len(got)] == list(got):
                result[k] = len(got)
        return result

    def encode_chats(self, convs: list[list[dict]], lines: list[int]) -> list[tuple[list[int], list[int]]]:
        """Chat conversations through the chat template; loss on assistant spans (or on all tokens)."""
        full_texts = self._render(convs, gen=False)
        if self.train_on == "all":
            out = []
            for ids in self._ids(full_texts):
                labels = list(ids)
                if labels:
                    labels[0] = IGNORE
                out.append((list(ids), labels))
            return out
        fulls, encodings = self._encode(full_texts)
        # For each assistant message i: the prefix messages[:i] with the generation prompt (where its loss
        # starts) and messages[:i+1] (where it ends).
        starts, ends, owners, where = [], [], [], []
        for c, msgs in enumerate(convs):
            for i, m in enumerate(msgs):
                if m["role"] == "assistant":
                    starts.append(msgs[:i])
                    ends.append(msgs[:i + 1] if i + 1 < len(msgs) else None)  # the last one is the whole
                    owners.append(c)
                    where.append(i)
        rendered = iter(self._render([e for e in ends if e is not None], gen=False))
        end_texts = [full_texts[c] if e is None else next(rendered) for c, e in zip(owners, ends)]
        prefixes = self._render(starts, gen=True) + end_texts
        lengths = self._prefix_lengths(fulls, encodings, full_texts, prefixes, owners + owners)
        n = len(starts)
        labels_all = [[IGNORE] * len(ids) for ids in fulls]
        for k, c in enumerate(owners):
            full = fulls[c]
            i = where[k]
            for name, length in ((f"messages[:{i}] with the generation prompt", lengths[k]),
                                 (f"messages[:{i + 1}]", lengths[n + k])):
                if length is None:
                    raise DataError(
                        f"the chat template of tokenizer {tokenizer_name(self.tok)} is not prefix-stable: "
                        f"the tokens of {name} are not a prefix of the whole conversation (line {lines[c]}), "
                        "so the loss mask cannot be computed per message",
                        [{"line": lines[c], "error": "chat template is not prefix-stable"}], {"bad_lines": 1})
            lo, hi = lengths[k], lengths[n + k]
            span = full[lo:hi]
            # Keep the end-of-turn token (the model must learn to stop) but not the template's whitespace after
            # it: that is never generated.
            if self.eos in span:
                hi = lo + len(span) - span[::-1].index(self.eos)
            labels = labels_all[c]
            labels[lo:hi] = full[lo:hi]
        out = []
        for ids, labels in zip(fulls, labels_all):
            if labels:
                labels[0] = IGNORE
            out.append((list(ids), labels))
        return out
