"""The trainer's data pipeline: a JSONL file -> validated, tokenized, loss-masked, cached Arrow rows -> batches.

    prepared = prepare_dataset(Path("job.jsonl"), tokenizer, cfg, home / "cache" / "data")
    batches = plan_batches(prepared.train["length"], cfg.batch_size, seed=cfg.seed, epoch=0,
                           packing=cfg.packing, max_length=cfg.max_length)
    batch = collate([prepared.train[i] for i in batches[0]], tokenizer.pad_token_id, packing=cfg.packing)
    loss = model(**batch, use_cache=False).loss    # no attention_mask: see ``collate``

Loss masks are computed per message through the tokenizer's own chat template, so they are exact whatever the
template: message i's tokens are the difference between rendering ``messages[:i]`` (with the generation prompt)
and ``messages[:i+1]``; a template for which that is not a token prefix is refused. The label of every example's
first token is -100 (it has no previous token in the example), so packed examples never learn from each other.

Check a file and print its report (tokenizes it, using the cache):

    python -m trainingd.train.data FILE.jsonl --model models/tiny-qwen3 [--config config.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from trainingd.atomic_ops import fsync_dir
from trainingd.config import Config
from trainingd.train.formats import (FORMATS, DataError, Scan, bad_lines_reason, detect_format, file_sha256,
                                     iter_lines, parse_line, scan_file, to_messages)

if TYPE_CHECKING:
    import datasets
    import torch

__all__ = ["FORMATS", "DataError", "PreparedData", "detect_format", "to_messages", "file_sha256",
           "prepare_dataset", "plan_batches", "collate", "num_trained_tokens", "tokenizer_fingerprint"]

log = logging.getLogger(__name__)

# Bump whenever the tokenized rows would change for the same inputs, so old caches are not reused.
CODE_VERSION = "1"
IGNORE = -100
ENCODE_BATCH = 512  # conversations rendered and tokenized per call (one template call, one tokenizer call)
PROGRESS_EVERY_S = 0.5


@dataclass
class PreparedData:
    """Tokenized rows (memory-mapped Arrow) and what preparing them found.

    ``train``/``eval`` columns: input_ids (list[int]), labels (list[int], -100 = no loss), length (int).
    ``report``: format, lines, examples, kept, dropped_too_long, truncated, no_trained_tokens, bad_lines,
    tokens, trained_tokens, sha256, cache_hit, seconds (+ eval_examples, longest, cache_key).
    """

    train: "datasets.Dataset"
    eval: "datasets.Dataset | None"
    report: dict


def _features():
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")), "length": Value("int32")})


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of what decides token ids: the tokenizer's vocabulary/merges, special tokens and chat template."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab(),
                                                                               sort_keys=True).encode())
    h.update(json.dumps([str(getattr(tokenizer, "chat_template", None)), tokenizer.eos_token_id,
                         tokenizer.pad_token_id, type(tokenizer).__name__]).encode())
    return h.hexdigest()


def _cache_key(sha: str, eval_sha: str | None, tokenizer, cfg: Config) -> str:
    parts = {"code": CODE_VERSION, "sha256": sha, "eval_sha256": eval_sha, "tokenizer": tokenizer_fingerprint(tokenizer),
             "max_length": cfg.max_length, "truncation": cfg.truncation, "train_on": cfg.train_on,
             "eval_fraction": cfg.eval_fraction, "seed": cfg.seed}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _tokenizer_name(tokenizer) -> str:
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
                        f"the chat template of tokenizer {_tokenizer_name(self.tok)} is not prefix-stable: "
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


class _Stats:
    def __init__(self) -> None:
        self.kept = self.dropped_too_long = self.truncated = self.no_trained_tokens = 0
        self.tokens = self.trained_tokens = self.longest = 0
        self.eval_kept = 0


def _chunks(items: Iterable, n: int) -> Iterable[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _tokenize_file(path: Path, scan: Scan, encoder: Encoder, cfg: Config, writers: dict, eval_ids: set[int],
                   stats: _Stats, emit: Callable[[int], None], eval_all: bool = False) -> None:
    """Second streaming pass: encode records in batches and append rows to the train/eval Arrow writers."""
    fmt = scan.format
    index = 0
    errors: list[dict] = []
    n_errors = 0
    for chunk in _chunks(iter_lines(path), ENCODE_BATCH):
        lines, items = [], []
        for number, raw in chunk:
            record, _ = parse_line(raw)  # validated already
            items.append(record["text"] if fmt == "text" else to_messages(record, fmt))
            lines.append(number)
        try:
            pairs = encoder.encode_texts(items) if fmt == "text" else encoder.encode_chats(items, lines)
        except DataError:
            raise
        except Exception:
            # A template may reject a conversation (e.g. roles out of order): find which ones, one by one.
            pairs = []
            for number, item in zip(lines, items):
                try:
                    pairs += encoder.encode_texts([item]) if fmt == "text" else encoder.encode_chats([item], [number])
                except DataError:
                    raise
                except Exception as e:  # noqa: BLE001 - any template error is this line's problem
                    n_errors += 1
                    if len(errors) < 50:
                        errors.append({"line": number, "error": f"chat template failed: {type(e).__name__}: {e}"})
                    pairs.append(None)
        batch = {"train": {"input_ids": [], "labels": [], "length": []},
                 "eval": {"input_ids": [], "labels": [], "length": []}}
        for pair in pairs:
            split = "eval" if eval_all or index in eval_ids else "train"
            index += 1
            if pair is None:
                continue
            ids, labels = pair
            stats.longest = max(stats.longest, len(ids))
            if len(ids) > cfg.max_length:
                if cfg.truncation == "drop":
                    stats.dropped_too_long += 1
                    continue
                ids, labels = ids[:cfg.max_length], labels[:cfg.max_length]
                stats.truncated += 1
            trained = len(labels) - labels.count(IGNORE)
            if trained == 0:
                stats.no_trained_tokens += 1
                continue
            if split == "train":
                stats.kept += 1
                stats.tokens += len(ids)
                stats.trained_tokens += trained
            else:
                stats.eval_kept += 1
            b = batch[split]
            b["input_ids"].append(ids)
            b["labels"].append(labels)
            b["length"].append(len(ids))
        for split, b in batch.items():
            if b["length"]:
                writers[split].write_batch(b)
        emit(chunk[-1][0])
    if n_errors:
        raise DataError(bad_lines_reason(errors, n_errors), errors, {"lines": scan.lines, "bad_lines": n_errors})


def _nothing_trainable(stats: _Stats, examples: int, cfg: Config) -> DataError:
    parts = []
    if stats.dropped_too_long:
        n = "all" if stats.dropped_too_long == examples else f"{stats.dropped_too_long} of"
        parts.append(f"{n} {examples} examples are longer than max_length {cfg.max_length} tokens "
                     f"(longest {stats.longest})")
    if stats.no_trained_tokens:
        n = "all" if stats.no_trained_tokens == examples else f"{stats.no_trained_tokens} of"
        what = " after truncation to max_length" if cfg.truncation == "truncate" else ""
        parts.append(f"{n} {examples} examples have no trained token{what}")
    if not parts:
        parts.append(f"all {examples} examples are held out for evaluation")
    counts = {"examples": examples, "dropped_too_long": stats.dropped_too_long,
              "no_trained_tokens": stats.no_trained_tokens, "longest": stats.longest}
    return DataError("no trainable example: " + "; ".join(parts), [], counts)


def _load(folder: Path) -> tuple["datasets.Dataset", "datasets.Dataset | None"]:
    from datasets import Dataset

    train = Dataset.from_file(str(folder / "train.arrow"))
    ev = Dataset.from_file(str(folder / "eval.arrow")) if (folder / "eval.arrow").exists() else None
    return train, ev


def prepare_dataset(path: Path, tokenizer, cfg: Config, cache_dir: Path, *, eval_file: Path | None = None,
                    progress: Callable[[dict], None] | None = None) -> PreparedData:
    """Validate, tokenize (with loss masks), cache and split one training file.

    Raises DataError before tokenizing when the file is empty, binary, not UTF-8 or has any bad line, and after
    tokenizing when no example has a trained token within ``cfg.max_length``. A second call with the same file,
    tokenizer and settings loads the memory-mapped cache (``report["cache_hit"]``). ``progress`` gets
    ``{"phase": "validating"|"tokenizing", "lines_done": n, "lines_total": m|None}`` at most twice a second.
    With ``eval_file`` the eval rows come from that file; otherwise ``cfg.eval_fraction`` of the examples
    (chosen with ``cfg.seed``) are held out.
    """
    t0 = time.monotonic()
    path, cache_dir = Path(path), Path(cache_dir)
    sha = file_sha256(path)
    eval_sha = file_sha256(eval_file) if eval_file is not None else None
    key = _cache_key(sha, eval_sha, tokenizer, cfg)
    folder = cache_dir / key
    if (folder / "report.json").exists():
        try:
            train, ev = _load(folder)
            report = json.loads((folder / "report.json").read_text())
            report.update(cache_hit=True, seconds=round(time.monotonic() - t0, 3))
            log.info("data cache hit for %s (%s)", path.name, key)
            return PreparedData(train, ev, report)
        except Exception as e:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
            log.warning("data cache %s unreadable (%s); rebuilding", folder, e)
            shutil.rmtree(folder, ignore_errors=True)

    last = [0.0]

    def emit(phase: str, done: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (force or now - last[0] >= PROGRESS_EVERY_S):
            last[0] = now
            progress({"phase": phase, "lines_done": done, "lines_total": total})

    emit("validating", 0, None, force=True)
    scan = scan_file(path, progress=lambda n: emit("validating", n, None))
    if scan.format != "text" and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"tokenizer {_tokenizer_name(tokenizer)} has no chat template, which the {scan.format} "
                        "format needs; use a model with one or convert the file to {\"text\": ...}",
                        [], {"lines": scan.lines, "examples": scan.examples})
    eval_scan = None
    if eval_file is not None:
        try:
            eval_scan = scan_file(eval_file)
        except DataError as e:
            raise DataError(f"eval file {Path(eval_file).name}: {e}", e.details, e.counts) from None
    if eval_scan is not None and eval_scan.format != scan.format:
        log.info("eval file %s is in format %s, training file in %s", eval_file, eval_scan.format, scan.format)
    eval_ids: set[int] = set()
    if eval_file is None and cfg.eval_fraction > 0 and scan.examples >= 2:
        k = min(scan.examples - 1, max(1, round(scan.examples * cfg.eval_fraction)))
        eval_ids = set(random.Random(cfg.seed).sample(range(scan.examples), k))

    from datasets.arrow_writer import ArrowWriter

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{key}.tmp-"))
    encoder = Encoder(tokenizer, cfg.train_on)
    stats = _Stats()
    eval_stats = _Stats()
    try:
        features = _features()
        writers = {"train": ArrowWriter(features=features, path=str(tmp / "train.arrow")),
                   "eval": ArrowWriter(features=features, path=str(tmp / "eval.arrow"))}
        emit("tokenizing", 0, scan.lines, force=True)
        _tokenize_file(path, scan, encoder, cfg, writers, eval_ids, stats,
                       lambda n: emit("tokenizing", n, scan.lines))
        if eval_scan is not None:
            _tokenize_file(eval_file, eval_scan, encoder, cfg, writers, set(), eval_stats, lambda n: None,
                           eval_all=True)
        for w in writers.values():
            w.finalize()
            w.close()
        emit("tokenizing", scan.lines, scan.lines, force=True)
        if stats.kept == 0:
            raise _nothing_trainable(stats, scan.examples, cfg)
        n_eval = stats.eval_kept + eval_stats.eval_kept
        if n_eval == 0:
            (tmp / "eval.arrow").unlink()
        report = {"format": scan.format, "lines": scan.lines, "examples": scan.examples, "kept": stats.kept,
                  "dropped_too_long": stats.dropped_too_long, "truncated": stats.truncated,
                  "no_trained_tokens": stats.no_trained_tokens, "bad_lines": 0, "tokens": stats.tokens,
                  "trained_tokens": stats.trained_tokens, "longest": stats.longest, "eval_examples": n_eval,
                  "sha256": sha, "cache_key": key, "code_version": CODE_VERSION}
        # report.json is written last: a cache folder without it is never used.
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(tmp)
        if folder.exists() and not (folder / "report.json").exists():
            shutil.rmtree(folder)  # incomplete (only a lost rename or a hand edit makes one): never used
        try:
            os.rename(tmp, folder)
            fsync_dir(cache_dir)
        except OSError:
            # Another process cached the same key first; its copy is just as good.
            if not (folder / "report.json").exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    train, ev = _load(folder)
    report["cache_hit"] = False
    report["seconds"] = round(time.monotonic() - t0, 3)
    log.info("prepared %s: %s", path.name, report)
    return PreparedData(train, ev, report)


def plan_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, packing: bool = False,
                 max_length: int) -> list[list[int]]:
    """The micro-batches of one epoch as lists of row indices; deterministic for (seed, epoch).

    Without packing: shuffle, then sort chunks of 50 x batch_size by length and cut them into micro-batches of
    ``batch_size`` (so a batch holds similar lengths and little padding), then shuffle the batches.
    With packing: each micro-batch is one packed row of examples whose lengths sum to at most ``max_length``
    (first-fit decreasing within the same shuffled chunks), and the rows are shuffled.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = [int(x) for x in lengths]
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = 50 * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i], reverse=packing)
        if not packing:
            batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
            continue
        bins: list[list[int]] = []
        room: list[int] = []
        for i in part:
            n = min(lengths[i], max_length)
            for b, free in enumerate(room):
                if n <= free:
                    bins[b].append(i)
                    room[b] -= n
                    break
            else:
                bins.append([i])
                room.append(max_length - n)
        batches += bins
    rng.shuffle(batches)
    return batches


def collate(rows: list[dict], pad_token_id: int, *, packing: bool = False) -> dict[str, "torch.Tensor"]:
    """Stack rows into ``input_ids``, ``labels`` and ``position_ids`` tensors, padded on the right.

    There is never an ``attention_mask``: with causal attention and right padding no real token attends to
    padding, and without a mask sdpa takes its fast causal path. With ``packing`` the rows are concatenated into
    one sequence whose position_ids restart at 0 for each example; transformers (masking_utils,
    ``find_packed_sequence_indices``) turns restarting positions into a block-diagonal causal mask when there is
    no attention_mask and no cache, so call the model with ``use_cache=False``.
    """
    import torch

    if not rows:
        raise ValueError("collate needs at least one row")
    if packing:
        ids, labels, pos = [], [], []
        for r in rows:
            ids += r["input_ids"]
            labels += r["labels"]
            # Belt and braces: the first label of an example must never be predicted from the previous one.
            labels[len(labels) - len(r["labels"])] = IGNORE
            pos += range(len(r["input_ids"]))
        seqs = [(ids, labels, pos)]
    else:
        seqs = [(list(r["input_ids"]), list(r["labels"]), list(range(len(r["input_ids"])))) for r in rows]
    width = max(len(s[0]) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    label_t = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, (i, l, p) in enumerate(seqs):
        n = len(i)
        input_ids[b, :n] = torch.tensor(i, dtype=torch.long)
        label_t[b, :n] = torch.tensor(l, dtype=torch.long)
        position_ids[b, :n] = torch.tensor(p, dtype=torch.long)
        # Padding continues the positions of the last sequence, so it never looks like a packed example start
        # (it is causal and after every real token, so nothing real attends to it either way).
        if n < width:
            position_ids[b, n:] = torch.arange(p[-1] + 1 if p else 0, p[-1] + 1 + width - n if p else width - n)
    return {"input_ids": input_ids, "labels": label_t, "position_ids": position_ids}


def num_trained_tokens(batch: dict) -> int:
    """Tokens that produce loss: ``labels[:, 1:] != -100`` (the model shifts labels by one)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def main(argv: list[str] | None = None) -> int:
    from trainingd.config import load_config

    p = argparse.ArgumentParser(description="Validate and tokenize a training file; print its report.")
    p.add_argument("file", type=Path)
    p.add_argument("--model", type=Path, required=True, help="model folder whose tokenizer to use")
    p.add_argument("--config", type=Path, default=Path("config.json"))
    p.add_argument("--cache-dir", type=Path, default=None, help="default: a temporary folder")
    a = p.parse_args(argv)
    from transformers import AutoTokenizer

    logging.basicConfig(level=logging.WARNING)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    cfg = load_config(a.config)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            prepared = prepare_dataset(a.file, tokenizer, cfg, a.cache_dir or Path(tmp))
        except DataError as e:
            print(json.dumps(e.to_dict(), indent=2))
            return 1
        print(json.dumps(prepared.report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
