"""Validation, too-long examples, the tokenized cache and the eval split of ``prepare_dataset``.

    .venv/bin/pytest tests/test_data_validation.py -q
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from conftest import chat_lines, write_jsonl
from trainingd.config import Config
from trainingd.train.data import DataError, prepare_dataset
from trainingd.train.formats import scan_file

CFG = Config(max_length=128)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def chat(user: str = "Say yes", answer: str = "Yes") -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]})


def prepare_error(path: Path, tokenizer, tmp_path: Path, cfg: Config = CFG) -> DataError:
    phases: list[str] = []
    with pytest.raises(DataError) as info:
        prepare_dataset(path, tokenizer, cfg, tmp_path / "cache", progress=lambda p: phases.append(p["phase"]))
    info.value.phases = phases
    return info.value


@pytest.mark.parametrize("lines, reason", [
    ([chat(), chat(), '{"messages": [1 2]}'], "line 3: invalid JSON (Expecting ',' delimiter at column 17)"),
    ([chat(), chat(), chat(), chat(),
      '{"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}'],
     'line 5: "messages"[1] has role "robot"; expected system, user, assistant or tool'),
    ([chat(), b'{"t\xff": 1}'], "line 2: not valid UTF-8 (byte 0xff at column 4)"),
    ([chat(), "[1, 2]"], "line 2: expected a JSON object, got array"),
    (['[{"text": "a"}, {"text": "b"}]'], "line 1: expected a JSON object, got array (JSONL holds one object per "
                                         "line, not a JSON array)"),
    (["{", '  "text": "a"', "}"], "3 bad lines: line 1: invalid JSON (Expecting property name enclosed in double "
                                  "quotes at column 2) (JSONL holds one object per line; this looks like "
                                  "pretty-printed JSON)"),
    ([chat(), '{"messages": [{"role": "user", "content": "hi"}]}'], 'line 2: "messages" has no assistant turn'),
    ([chat(), '{"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]}'],
     'line 2: "messages"[0] "content" must be a string, got number'),
    ([chat(), '{"messages": [{"role": "user"}]}'], 'line 2: "messages"[0] has no "content"'),
    ([chat(), '{"messages": "hello"}'], 'line 2: "messages" must be an array, got string'),
    ([chat(), '{"text": "plain"}'], "line 2: record is in format text (keys 'text') but the file is in format "
                                    "messages (from line 1)"),
    (['{"question": "q", "answer": "a"}'], "line 1: unrecognised record with keys 'question', 'answer'"),
    (['{"prompt": "p", "completion": null}'], 'line 1: "completion" must be a string, got null'),
    (['{"instruction": "i", "input": 3, "output": "o"}'], 'line 1: "input" must be a string, got number'),
    (['{"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]}'],
     ('line 1: "conversations"[1] has from "bot"; expected human, user, gpt, assistant, system, '
      'function_call or observation')),
    ([], "file is empty"),
    (["", "   ", ""], "file is empty (only blank lines)"),
])
def test_a_bad_file_is_refused_with_a_specific_reason_before_tokenizing(tokenizer, tmp_path, lines, reason):
    err = prepare_error(write_lines(tmp_path / "bad.jsonl", lines), tokenizer, tmp_path)
    assert str(err).startswith(reason)
    assert "\n" not in str(err)
    assert "tokenizing" not in err.phases
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_a_binary_file_is_refused_with_the_offset_of_its_first_nul_byte(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "a"}\n\x89PNG\x00\x00\x00\rIHDR')
    err = prepare_error(path, tokenizer, tmp_path)
    assert str(err) == "file is binary (NUL byte at offset 18)"


def test_every_bad_line_is_listed_with_its_number_and_the_total_is_counted(tokenizer, tmp_path):
    lines = [chat() if i % 2 else "not json" for i in range(130)]
    err = prepare_error(write_lines(tmp_path / "bad.jsonl", lines), tokenizer, tmp_path)
    assert str(err).startswith("65 bad lines: line 1: invalid JSON (Expecting value at column 1); line 3: ")
    assert str(err).endswith("(and 62 more)")
    assert err.counts["bad_lines"] == 65 and err.counts["lines"] == 130
    assert len(err.details) == 50
    assert [d["line"] for d in err.details] == list(range(1, 100, 2))


def test_blank_lines_and_a_byte_order_mark_are_skipped_and_line_numbers_stay_true(tokenizer, tmp_path):
    path = write_lines(tmp_path / "ok.jsonl", ["\ufeff" + chat(), "", chat(), "  ", chat() + "\r"])
    prepared = prepare_dataset(path, tokenizer, CFG, tmp_path / "cache")
    assert prepared.report["lines"] == 5 and prepared.report["examples"] == prepared.report["kept"] == 3
    bad = write_lines(tmp_path / "bad.jsonl", [chat(), "", "", "{oops"])
    assert str(prepare_error(bad, tokenizer, tmp_path)).startswith("line 4: invalid JSON")


def test_validation_streams_so_memory_does_not_grow_with_the_file(tmp_path):
    record = chat("Explain the queue " * 10, "Hello world " * 20)
    small = write_lines(tmp_path / "small.jsonl", [record] * 500)
    big = write_lines(tmp_path / "big.jsonl", [record] * 20_000)
    peaks = []
    for path in (small, big):
        tracemalloc.start()
        scan = scan_file(path)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert scan.format == "messages"
    assert big.stat().st_size > 8_000_000
    # 40x the lines, about the same peak: nothing is kept per line.
    assert peaks[1] < 2 * peaks[0] + 64_000, peaks


def test_too_long_examples_are_dropped_and_counted(tokenizer, tmp_path):
    records = chat_lines(20) + [json.loads(chat("Hello world " * 100, "Yes"))] * 3
    path = write_jsonl(tmp_path / "mix.jsonl", records)
    prepared = prepare_dataset(path, tokenizer, Config(max_length=64), tmp_path / "cache")
    report = prepared.report
    assert report["dropped_too_long"] >= 3 and report["truncated"] == 0
    assert report["kept"] + report["dropped_too_long"] == 23 == report["examples"]
    assert max(prepared.train["length"]) <= 64
    assert report["tokens"] == sum(prepared.train["length"])
    assert [d["line"] for d in report["dropped"]][-3:] == [21, 22, 23]
    assert report["dropped"][-1]["error"] == f"{report['dropped'][-1]['tokens']} tokens, longer than max_length 64"


def test_truncation_cuts_and_drops_examples_whose_completion_is_cut_away(tokenizer, tmp_path):
    long_answer = json.loads(chat("Say yes", "Hello world " * 100))  # loss survives the cut
    long_prompt = json.loads(chat("Hello world " * 100, "Yes"))       # the cut removes the only trained tokens
    path = write_jsonl(tmp_path / "long.jsonl", [long_answer, long_prompt, json.loads(chat())])
    prepared = prepare_dataset(path, tokenizer, Config(max_length=64, truncation="truncate"), tmp_path / "cache")
    report = prepared.report
    assert (report["truncated"], report["no_trained_tokens"], report["kept"]) == (2, 1, 2)
    assert report["dropped"] == [{"line": 2, "tokens": 64, "error": "no trained token after truncation"}]
    assert sorted(prepared.train["length"]) == [sorted(prepared.train["length"])[0], 64]


def test_a_file_with_nothing_trainable_fails_with_the_longest_length(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "long.jsonl", [json.loads(chat("Hello world " * (50 + i), "Yes"))
                                                 for i in range(12)])
    err = prepare_error(path, tokenizer, tmp_path)
    assert str(err) == ("no trainable example: all 12 examples are longer than max_length 128 tokens "
                        f"(longest {err.counts['longest']})")
    assert err.counts["longest"] > 128 and err.counts["dropped_too_long"] == 12
    assert [d["line"] for d in err.details] == list(range(1, 13))
    assert not list((tmp_path / "cache").iterdir()), "a failed prepare leaves no cache behind"
    truncated = prepare_error(path, tokenizer, tmp_path, Config(max_length=128, truncation="truncate"))
    assert str(truncated) == ("no trainable example: all 12 examples have no trained token after truncation "
                              "to max_length")


def test_a_retried_file_is_loaded_from_the_cache_without_tokenizing(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_lines(50))
    first = prepare_dataset(path, tokenizer, CFG, tmp_path / "cache")
    phases: list[str] = []
    again = prepare_dataset(path, tokenizer, CFG, tmp_path / "cache", progress=lambda p: phases.append(p["phase"]))
    assert (first.report["cache_hit"], again.report["cache_hit"]) == (False, True)
    assert phases == []
    assert again.train["input_ids"] == first.train["input_ids"]
    assert again.train.cache_files, "rows are memory-mapped from the Arrow cache"
    assert {k: v for k, v in again.report.items() if k not in ("cache_hit", "seconds")} == \
        {k: v for k, v in first.report.items() if k not in ("cache_hit", "seconds")}


@pytest.mark.parametrize("change", ["max_length", "train_on", "truncation", "eval_fraction", "seed", "content",
                                    "template"])
def test_the_cache_key_covers_everything_that_changes_the_rows(tokenizer, tmp_path, change):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_lines(20))
    assert not prepare_dataset(path, tokenizer, CFG, tmp_path / "cache").report["cache_hit"]
    cfg, tok = CFG, tokenizer
    if change == "content":
        write_jsonl(path, chat_lines(20, seed=1))
    elif change == "template":
        tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
        tok.chat_template = tokenizer.chat_template.replace("'<|im_start|>' + message.role + '\\n'",
                                                            "'<|im_start|>' + message.role + '\\n\\n'")
        assert tok.chat_template != tokenizer.chat_template
    else:
        values = {"max_length": 100, "train_on": "all", "truncation": "truncate", "eval_fraction": 0.2, "seed": 7}
        cfg = Config(**{"max_length": 128, change: values[change]})
    assert not prepare_dataset(path, tok, cfg, tmp_path / "cache").report["cache_hit"]


def test_a_crash_while_caching_leaves_nothing_that_is_used_later(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_lines(600))

    def crash(p: dict) -> None:
        if p["phase"] == "tokenizing" and p["lines_done"] > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(path, tokenizer, CFG, tmp_path / "cache", progress=crash)
    assert list((tmp_path / "cache").iterdir()) == []
    prepared = prepare_dataset(path, tokenizer, CFG, tmp_path / "cache")
    assert not prepared.report["cache_hit"] and prepared.report["kept"] == 600
    # A cache folder whose report (written last) is missing is rebuilt, not trusted.
    folder = tmp_path / "cache" / prepared.report["cache_key"]
    (folder / "report.json").unlink()
    (folder / "train.arrow").write_bytes(b"half")
    rebuilt = prepare_dataset(path, tokenizer, CFG, tmp_path / "cache")
    assert not rebuilt.report["cache_hit"] and len(rebuilt.train) == 600


def test_eval_split_is_seeded_and_disjoint_from_train(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_lines(100))

    def split(seed: int) -> tuple[set, set]:
        p = prepare_dataset(path, tokenizer, Config(max_length=128, eval_fraction=0.1, seed=seed), tmp_path / "c")
        assert p.report["eval_examples"] == len(p.eval) == 10 and p.report["kept"] == len(p.train) == 90
        return ({tuple(x) for x in p.train["input_ids"]}, {tuple(x) for x in p.eval["input_ids"]})

    train, held = split(1)
    assert not train & held
    assert split(1)[1] == held
    assert split(2)[1] != held


def test_an_eval_file_provides_the_eval_rows(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_lines(30))
    eval_path = write_jsonl(tmp_path / "eval.jsonl", chat_lines(7, seed=5))
    p = prepare_dataset(path, tokenizer, CFG, tmp_path / "cache", eval_file=eval_path)
    assert (len(p.train), len(p.eval), p.report["eval_examples"]) == (30, 7, 7)
    assert prepare_dataset(path, tokenizer, CFG, tmp_path / "cache").eval is None


def test_progress_reports_both_phases_with_line_counts(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_lines(40))
    seen: list[dict] = []
    prepare_dataset(path, tokenizer, CFG, tmp_path / "cache", progress=seen.append)
    assert seen[0] == {"phase": "validating", "lines_done": 0, "lines_total": None}
    assert seen[-1] == {"phase": "tokenizing", "lines_done": 40, "lines_total": 40}


def test_a_bad_eval_file_is_named_in_the_reason(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", chat_lines(5))
    eval_path = write_lines(tmp_path / "held.jsonl", [chat(), "{"])
    with pytest.raises(DataError, match=r"^eval file held.jsonl: line 2: invalid JSON"):
        prepare_dataset(path, tokenizer, CFG, tmp_path / "cache", eval_file=eval_path)


def test_the_check_command_prints_the_reason_and_exits_nonzero(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    bad = write_lines(tmp_path / "bad.jsonl", [chat(), '{"messages": [1 2]}'])
    good = write_lines(tmp_path / "good.jsonl", [chat(), chat()])
    run = [sys.executable, "-m", "trainingd.train.formats", "--json"]
    out = subprocess.run(run + [str(bad)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 1
    assert json.loads(out.stdout)["reason"] == "line 2: invalid JSON (Expecting ',' delimiter at column 17)"
    out = subprocess.run(run + [str(good)], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["examples"] == 2


def test_prune_cache_keeps_the_most_recent_caches_and_clears_dead_writers(tokenizer, tmp_path):
    import os

    from trainingd.train.data import prune_cache

    cache = tmp_path / "cache"
    folders = []
    for i in range(4):
        path = write_jsonl(tmp_path / f"f{i}.jsonl", chat_lines(3, seed=i))
        p = prepare_dataset(path, tokenizer, CFG, cache, keep_cache=3)
        folders.append(cache / p.report["cache_key"])
        os.utime(folders[-1] / "report.json", (1000 + i, 1000 + i))
    assert [f.exists() for f in folders] == [False, True, True, True]
    # A hit counts as a use: f1 becomes the most recent and survives the next prune.
    assert prepare_dataset(tmp_path / "f1.jsonl", tokenizer, CFG, cache).report["cache_hit"]
    dead = cache / ".abc.tmp-999999999-x"  # no such pid
    live = cache / f".abc.tmp-{os.getpid()}-y"
    dead.mkdir()
    live.mkdir()
    assert set(prune_cache(cache, keep=1)) == {dead, folders[2], folders[3]}
    assert folders[1].exists() and live.exists()
