"""JSON array files converted to JSON Lines, streaming: the same records ``json.load`` sees, in any chunking, and
a reason for each file that is not an array of objects.

    .venv/bin/pytest tests/test_json_array.py -q
"""

from __future__ import annotations

import io
import json
import random
import tracemalloc

import pytest

from trainingd.daemon.json_array import NotConvertible, convert, iter_records


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice(['a', 'é', '日', '😀', '"', '\\', '\n', ' ', ',', ']', '}', '\u0000', 'x'])
                       for _ in range(rng.randint(0, 12)))
    if kind == "int":
        return rng.choice([0, -1, 7, 10**30, -(10**18)])
    if kind == "float":
        return rng.choice([0.5, -1e-7, 1e300, 3.0])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}": random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 4096])
def test_records_match_json_load_whatever_the_chunk_size(chunk):
    rng = random.Random(chunk)
    for _ in range(30):
        records = [random_value(rng) for _ in range(rng.randint(1, 6))]
        text = json.dumps(records, indent=rng.choice([None, 2]), ensure_ascii=rng.random() < 0.5)
        assert list(iter_records(io.StringIO(text), chunk_chars=chunk)) == records


@pytest.mark.parametrize("text, reason", [
    ("", "is empty"),
    ("  \n ", "is empty"),
    ('{"text": "a"}\n{"text": "b"}\n', "holds a JSON object, not an array of records: if it is JSON Lines"),
    ("hello", "does not start with '[' (found 'h' at line 1 column 1)"),
    ("[]", "is an empty array: there is nothing to train"),
    ('[{"a": 1},\n {"a": 2}', "is not valid JSON (the array is not closed: ']' is missing at the end)"),
    ('[{"a": 1},\n {"a": 2},\n]', "is not valid JSON (a comma before ']' at line 3 column 1)"),
    ('[{"a": 1} {"a": 2}]', "is not valid JSON (expected ',' or ']' after record 1 at line 1 column 11)"),
    ('[{"a": 1},\n {"a": tru}]', "is not valid JSON (Expecting value at line 2 column 8)"),
    ('[{"a": "unterminated}]', "is not valid JSON (Unterminated string starting at line 1 column 8)"),
    ('[{"a": 1}] trailing', "is not valid JSON (more text after the closing ']' at line 1 column 12)"),
])
def test_a_file_that_is_not_a_json_array_is_refused_saying_why(text, reason):
    for chunk in (3, 4096):
        with pytest.raises(NotConvertible) as info:
            list(iter_records(io.StringIO(text), chunk_chars=chunk))
        assert str(info.value).startswith(reason), (chunk, str(info.value))


def test_convert_writes_one_object_per_line_and_keeps_every_value(tmp_path):
    records = [{"messages": [{"role": "user", "content": "caf\u00e9 \U0001f600\nnew line"}]},
               {"text": "lone \ud800 surrogate", "n": 10**30, "f": 1e-7}, {"nested": {"a": [1, 2, {"b": None}]}}]
    src = tmp_path / "data.json"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(records, indent=4).encode("utf-8", "surrogatepass"))
    dst = tmp_path / "out.jsonl"
    assert convert(src, dst) == 3
    lines = dst.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4
    assert [json.loads(line) for line in lines[:-1]] == records
    assert dst.read_text(encoding="utf-8").count("\n") == 3  # valid UTF-8: the surrogate stays escaped


@pytest.mark.parametrize("records, reason", [
    ([{"text": "a"}, "b"], "record 2 is a string, not an object"),
    ([[{"text": "a"}]], "record 1 is an array, not an object"),
    ([{"text": "a"}, None], "record 2 is null, not an object"),
])
def test_convert_refuses_records_that_are_not_objects(tmp_path, records, reason):
    src = tmp_path / "data.json"
    src.write_text(json.dumps(records))
    with pytest.raises(NotConvertible, match=reason):
        convert(src, tmp_path / "out.jsonl")


def test_convert_refuses_a_file_over_the_size_limit_and_a_file_that_is_not_utf8(tmp_path):
    src = tmp_path / "data.json"
    src.write_text(json.dumps([{"text": "a" * 4000}]))
    with pytest.raises(NotConvertible, match=r"larger than the 0 MiB converted in the inbox"):
        convert(src, tmp_path / "out.jsonl", max_bytes=1000)
    src.write_bytes('[{"text": "café"}]'.encode("latin-1"))
    with pytest.raises(NotConvertible, match=r"is not UTF-8 text \(byte 0xe9\)"):
        convert(src, tmp_path / "out.jsonl")


def test_convert_streams_so_memory_follows_the_largest_record_not_the_file(tmp_path):
    record = {"messages": [{"role": "user", "content": "Explain the queue " * 10},
                           {"role": "assistant", "content": "Hello world " * 20}]}
    peaks = []
    for n in (200, 20_000):
        src = tmp_path / f"{n}.json"
        src.write_text(json.dumps([record] * n, indent=2))
        tracemalloc.start()
        assert convert(src, tmp_path / f"{n}.jsonl") == n
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert (tmp_path / "20000.json").stat().st_size > 8_000_000
    assert peaks[1] < 2 * peaks[0] + 4 * 2**20, peaks  # 100x the records; the bound is the 1 MiB read buffer
