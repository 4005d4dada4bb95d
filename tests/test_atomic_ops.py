"""Atomic writes and strict JSON: what other processes read is whole, strict, and never clobbered by accident."""

from __future__ import annotations

import json
import math
from pathlib import Path

from trainingd.atomic_ops import atomic_create_text, atomic_write_json, file_sha256, json_safe


def test_json_safe_nulls_non_finite_numbers_but_keeps_strings_that_spell_them(tmp_path):
    report = {"loss": math.nan, "eta": -math.inf, "file": "NaN -Infinity.jsonl", "path": Path("/x"), "steps": (1, 2)}
    atomic_write_json(tmp_path / "r.json", json_safe(report))  # refuses NaN: would raise if any survived
    assert json.loads((tmp_path / "r.json").read_text()) == {
        "loss": None, "eta": None, "file": "NaN -Infinity.jsonl", "path": "/x", "steps": [1, 2]}


def test_atomic_create_never_overwrites_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "config.json"
    assert atomic_create_text(target, "first\n")
    assert not atomic_create_text(target, "second\n")
    assert target.read_text() == "first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_file_sha256_matches_hashlib_on_a_file_larger_than_one_block(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000  # 1.28 MB, more than one 1 MiB block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
