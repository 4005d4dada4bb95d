"""The trainer's data pipeline: a JSONL file -> validated, tokenized, loss-masked, cached Arrow rows -> batches.

    prepared = prepare_dataset(Path("job.jsonl"), tokenizer, cfg, home / "cache" / "data")
    plan = batches.plan_batches(prepared.train["length"], cfg.batch_size, seed=cfg.seed, epoch=0,
                                packing=cfg.packing, max_length=cfg.max_length)
    batch = batches.collate([prepared.train[i] for i in plan[0]], tokenizer.pad_token_id, packing=cfg.packing)
    loss = model(**batch, use_cache=False).loss    # no attention_mask: see ``batches.collate``

Record shapes and validation live in ``formats.py``; loss masks in ``masking.py``: they are computed per message
through the tokenizer's own chat template, so they are exact whatever the template (message i's tokens are the
difference between rendering ``messages[:i]`` with the generation prompt and ``messages[:i+1]``; a template for
which that is not a token prefix is refused). The label of every example's first token is -100 (nothing in the
example precedes it), so packed examples never learn from each other.

The cache under ``cache_dir/<key>/`` holds train.arrow, eval.arrow (if any) and report.json, written last into a
temp folder that is then renamed, so a crash never leaves a cache that is later used.

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
from typing import TYPE_CHECKING, Callable, Iterable

from trainingd.atomic_ops import file_sha256, publish_folder
from trainingd.config import Config
from trainingd.instance import pid_alive
from trainingd.train.formats import (FORMATS, DataError, Scan, bad_lines_reason, check_record, detect_format,
                                     iter_lines, parse_line, scan_file, to_messages, to_tools)
from trainingd.train.masking import IGNORE, Encoder, tokenizer_name

if TYPE_CHECKING:
    import datasets

__all__ = ["FORMATS", "DataError", "Encoder", "PreparedData", "detect_format", "to_messages", "file_sha256",
           "prepare_dataset", "prune_cache", "tokenizer_fingerprint"]

log = logging.getLogger(__name__)

# Bump whenever the tokenized rows would change for the same inputs, so old caches are not reused.
LOSS_WARN_FRACTION = 0.02  # a file losing more than this share of its examples gets a warning in the log
CODE_VERSION = "2"  # bump when the tokenization or masking changes: old caches are then not reused
ENCODE_BATCH = 512  # conversations rendered and tokenized per call (one template call, one tokenizer call)
PROGRESS_EVERY_S = 0.5


@dataclass
class PreparedData:
    """Tokenized rows (memory-mapped Arrow) and what preparing them found.

    ``train``/``eval`` columns: input_ids (list[int]), labels (list[int], -100 = no loss), length (int).
    ``report``: format, lines, examples, kept, dropped_too_long, truncated, no_trained_tokens, bad_lines,
    tokens, trained_tokens, sha256, cache_hit, seconds (+ eval_examples, longest, cache_key, and ``dropped``:
    the first 10 dropped examples as {"line", "tokens", "error"}; a DataError lists the first 50).
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
    parts = {"code": CODE_VERSION, "sha256": sha, "eval_sha256": eval_sha,
             "tokenizer": tokenizer_fingerprint(tokenizer), "max_length": cfg.max_length,
             "truncation": cfg.truncation, "train_on": cfg.train_on, "eval_fraction": cfg.eval_fraction,
             "seed": cfg.seed}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


class _Stats:
    def __init__(self) -> None:
        self.kept = self.dropped_too_long = self.truncated = self.no_trained_tokens = 0
        self.tokens = self.trained_tokens = self.longest = 0
        self.eval_kept = 0
        self.dropped: list[dict] = []  # the first 50 dropped examples: line, tokens, why

    def drop(self, line: int, tokens: int, why: str) -> None:
        if len(self.dropped) < 50:
            self.dropped.append({"line": line, "tokens": tokens, "error": why})


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
        lines, items, tools = [], [], []
        for number, raw in chunk:
            record, _ = parse_line(raw)  # validated by scan_file
            if not isinstance(record, dict) or check_record(record, fmt) is not None:
                raise DataError(f"{path.name} changed while it was being prepared (line {number}); "
                                "files must not change once queued")
            items.append(record["text"] if fmt == "text" else to_messages(record, fmt))
            tools.append(None if fmt == "text" else to_tools(record, fmt))
            lines.append(number)
        try:
            pairs = encoder.encode_texts(items) if fmt == "text" else encoder.encode_chats(items, lines, tools)
        except Exception:  # noqa: BLE001 - any refusal: the lines are checked one by one below
            # A template may reject a conversation (e.g. roles out of order), or a message may not be locatable
            # in its render: find which lines, one by one, so the reason lists them all.
            pairs = []
            for number, item, item_tools in zip(lines, items, tools):
                try:
                    pairs += (encoder.encode_texts([item]) if fmt == "text" else
                              encoder.encode_chats([item], [number], [item_tools]))
                except DataError as e:
                    n_errors += 1
                    if len(errors) < 50:
                        errors.append({"line": number, "error": e.reason.removeprefix(f"line {number}: ")})
                    pairs.append(None)
                except Exception as e:  # noqa: BLE001 - any template error is this line's problem
                    n_errors += 1
                    if len(errors) < 50:
                        errors.append({"line": number, "error": f"chat template failed: {type(e).__name__}: {e}"})
                    pairs.append(None)
        batch = {"train": {"input_ids": [], "labels": [], "length": []},
                 "eval": {"input_ids": [], "labels": [], "length": []}}
        for number, pair in zip(lines, pairs):
            split = "eval" if eval_all or index in eval_ids else "train"
            index += 1
            if pair is None:
                continue
            ids, labels = pair
            stats.longest = max(stats.longest, len(ids))
            if len(ids) > cfg.max_length:
                if cfg.truncation == "drop":
                    stats.dropped_too_long += 1
                    stats.drop(number, len(ids), f"{len(ids)} tokens, longer than max_length {cfg.max_length}")
                    continue
                ids, labels = ids[:cfg.max_length], labels[:cfg.max_length]
                stats.truncated += 1
            trained = len(labels) - labels.count(IGNORE)
            if trained == 0:
                stats.no_trained_tokens += 1
                stats.drop(number, len(ids), "no trained token" + (" after truncation" if len(ids) < len(pair[0])
                                                                   else ""))
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
    return DataError("no trainable example: " + "; ".join(parts), stats.dropped, counts)


def _load(folder: Path) -> tuple["datasets.Dataset", "datasets.Dataset | None"]:
    from datasets import Dataset

    train = Dataset.from_file(str(folder / "train.arrow"))
    ev = Dataset.from_file(str(folder / "eval.arrow")) if (folder / "eval.arrow").exists() else None
    return train, ev


def prepare_dataset(path: Path, tokenizer, cfg: Config, cache_dir: Path, *, eval_file: Path | None = None,
                    progress: Callable[[dict], None] | None = None, keep_cache: int = 8,
                    sha256: str | None = None) -> PreparedData:
    """Validate, tokenize (with loss masks), cache and split one training file.

    Raises DataError before tokenizing when the file is empty, binary, not UTF-8 or has any bad line, and after
    tokenizing when no example has a trained token within ``cfg.max_length``. A second call with the same file,
    tokenizer and settings loads the memory-mapped cache (``report["cache_hit"]``). ``progress`` gets
    ``{"phase": "validating"|"tokenizing", "lines_done": n, "lines_total": m|None}`` at most twice a second.
    With ``eval_file`` the eval rows come from that file; otherwise ``cfg.eval_fraction`` of the examples
    (chosen with ``cfg.seed``) are held out. After a new cache is written, only the ``keep_cache`` most
    recently used caches are kept under ``cache_dir`` (see ``prune_cache``). ``sha256`` is the file's hash when
    the caller already has it (it is checked again while validating, so a file that changed is still refused).
    """
    t0 = time.monotonic()
    path, cache_dir = Path(path), Path(cache_dir)
    sha = sha256 or file_sha256(path)
    eval_sha = file_sha256(eval_file) if eval_file is not None else None
    key = _cache_key(sha, eval_sha, tokenizer, cfg)
    folder = cache_dir / key
    cached = _load_cached(folder, path.name, key, t0)
    if cached is not None:
        return cached

    emit = _throttled(progress)
    scan, eval_scan = _scan_inputs(path, sha, tokenizer, eval_file, emit)
    eval_ids = _held_out_ids(scan.examples, cfg) if eval_file is None else set()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{key}.tmp-{os.getpid()}-"))
    encoder = Encoder(tokenizer, cfg.train_on)
    try:
        stats, eval_stats = _tokenize_into(tmp, encoder, cfg, (path, scan), (eval_file, eval_scan), eval_ids, emit)
        if stats.kept == 0:
            raise _nothing_trainable(stats, scan.examples, cfg)
        n_eval = stats.eval_kept + eval_stats.eval_kept
        if n_eval == 0:
            (tmp / "eval.arrow").unlink()
        report = _report(scan, stats, n_eval, cfg, sha=sha, key=key)
        # report.json is written last: a cache folder without it is never used.
        (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        _publish_cache(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_cache(cache_dir, keep=keep_cache, protect=folder)
    train, ev = _load(folder)
    report["cache_hit"] = False
    report["seconds"] = round(time.monotonic() - t0, 3)
    log.info("prepared %s: %s", path.name, report)
    warn_losses(path.name, report)
    return PreparedData(train, ev, report)


def _load_cached(folder: Path, name: str, key: str, t0: float) -> PreparedData | None:
    """The complete cache in ``folder`` (report.json, written last, exists), or None; an unreadable one is removed."""
    if not (folder / "report.json").exists():
        return None
    try:
        train, ev = _load(folder)
        report = json.loads((folder / "report.json").read_text())
        report.update(cache_hit=True, seconds=round(time.monotonic() - t0, 3))
        os.utime(folder / "report.json")  # "recently used", for prune_cache
        log.info("data cache hit for %s (%s)", name, key)
        warn_losses(name, report)
        return PreparedData(train, ev, report)
    except Exception as e:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
        log.warning("data cache %s unreadable (%s); rebuilding", folder, e)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _throttled(progress: Callable[[dict], None] | None) -> Callable[..., None]:
    """``emit(phase, done, total, force=False)``: hands ``progress`` at most one report every PROGRESS_EVERY_S."""
    last = [0.0]

    def emit(phase: str, done: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (force or now - last[0] >= PROGRESS_EVERY_S):
            last[0] = now
            progress({"phase": phase, "lines_done": done, "lines_total": total})

    return emit


def _scan_inputs(path: Path, sha: str, tokenizer, eval_file: Path | None,
                 emit: Callable[..., None]) -> tuple[Scan, Scan | None]:
    """First streaming pass: validate the training file (and the eval file) before anything is tokenized."""
    emit("validating", 0, None, force=True)
    scan = scan_file(path, progress=lambda n: emit("validating", n, None))
    if scan.sha256 != sha:
        raise DataError(f"{path.name} changed while it was being prepared; files must not change once queued")
    if scan.format != "text" and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"tokenizer {tokenizer_name(tokenizer)} has no chat template, which the {scan.format} "
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
    return scan, eval_scan


def _held_out_ids(examples: int, cfg: Config) -> set[int]:
    """The examples held out for evaluation when there is no eval file: ``cfg.eval_fraction``, drawn with the seed."""
    if cfg.eval_fraction > 0 and examples >= 2:
        k = min(examples - 1, max(1, round(examples * cfg.eval_fraction)))
        return set(random.Random(cfg.seed).sample(range(examples), k))
    return set()


def _tokenize_into(tmp: Path, encoder: Encoder, cfg: Config, train: tuple[Path, Scan],
                   evaluation: tuple[Path | None, Scan | None], eval_ids: set[int],
                   emit: Callable[..., None]) -> tuple[_Stats, _Stats]:
    """Tokenize the training file (and the eval file) into ``tmp``'s train/eval Arrow files; returns their stats."""
    from datasets.arrow_writer import ArrowWriter

    (path, scan), (eval_file, eval_scan) = train, evaluation
    stats, eval_stats = _Stats(), _Stats()
    features = _features()
    writers = {"train": ArrowWriter(features=features, path=str(tmp / "train.arrow")),
               "eval": ArrowWriter(features=features, path=str(tmp / "eval.arrow"))}
    emit("tokenizing", 0, scan.lines, force=True)
    _tokenize_file(path, scan, encoder, cfg, writers, eval_ids, stats, lambda n: emit("tokenizing", n, scan.lines))
    if eval_scan is not None:
        _tokenize_file(eval_file, eval_scan, encoder, cfg, writers, set(), eval_stats, lambda n: None,
                       eval_all=True)
    for w in writers.values():
        w.finalize()
        w.close()
    emit("tokenizing", scan.lines, scan.lines, force=True)
    return stats, eval_stats


def _report(scan: Scan, stats: _Stats, n_eval: int, cfg: Config, *, sha: str, key: str) -> dict:
    """What preparing the file found (``PreparedData.report``, and the cache's report.json)."""
    return {"format": scan.format, "lines": scan.lines, "examples": scan.examples, "kept": stats.kept,
            "dropped_too_long": stats.dropped_too_long, "truncated": stats.truncated,
            "no_trained_tokens": stats.no_trained_tokens, "max_length": cfg.max_length, "bad_lines": 0,
            "tokens": stats.tokens,
            "trained_tokens": stats.trained_tokens, "longest": stats.longest, "eval_examples": n_eval,
            "sha256": sha, "cache_key": key, "code_version": CODE_VERSION,
            "dropped": stats.dropped[:10]}


def _publish_cache(tmp: Path, folder: Path) -> None:
    """Rename the finished ``tmp`` into place as ``folder`` (a copy another process published first is kept)."""
    if folder.exists() and not (folder / "report.json").exists():
        shutil.rmtree(folder)  # incomplete (only a lost rename or a hand edit makes one): never used
    try:
        publish_folder(tmp, folder, mode=None)
    except OSError:
        # Another process cached the same key first; its copy is just as good.
        if not (folder / "report.json").exists():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def warn_losses(name: str, report: dict) -> None:
    """Log a warning when more than LOSS_WARN_FRACTION of a file's examples are dropped or cut short."""
    examples = report.get("examples") or 0
    lost = (report.get("dropped_too_long") or 0) + (report.get("truncated") or 0) + \
        (report.get("no_trained_tokens") or 0)
    if examples and lost / examples > LOSS_WARN_FRACTION:
        log.warning("%s: %d of %d examples dropped as longer than max_length %s, %d truncated, %d without a "
                    "trained token; raise max_length (or set truncation) to keep them", name,
                    report.get("dropped_too_long") or 0, examples, report.get("max_length"),
                    report.get("truncated") or 0, report.get("no_trained_tokens") or 0)


def prune_cache(cache_dir: Path, *, keep: int = 8, protect: Path | None = None) -> list[Path]:
    """Delete what a long-running daemon would otherwise pile up under ``cache_dir``; returns what went.

    Temp folders of writers that died (the pid in their name is gone) are removed, and complete caches beyond
    the ``keep`` most recently used (by the mtime of their report.json, touched on every hit). Rows already
    memory-mapped by another process stay readable: a deleted file lives on until it is unmapped.
    """
    cache_dir = Path(cache_dir)
    removed: list[Path] = []
    if not cache_dir.is_dir():
        return removed
    complete = []
    for entry in cache_dir.iterdir():
        if entry.name.startswith(".") and ".tmp-" in entry.name:
            pid = entry.name.split(".tmp-", 1)[1].split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        elif (entry / "report.json").exists() and entry != protect:
            complete.append(((entry / "report.json").stat().st_mtime, entry))
    budget = keep - (1 if protect is not None else 0)
    for _, entry in sorted(complete, reverse=True)[max(0, budget):]:
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    if removed:
        log.info("pruned %d data cache folder(s) under %s", len(removed), cache_dir)
    return removed


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
