"""Atomic writes and strict JSON: what other processes read is whole, strict, and never clobbered by accident."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from trainingd.atomic_ops import (atomic_create_text, atomic_write_json, durable_copy, file_sha256, json_safe,
                                 link_to_free_name, publish_folder, retire_folder)


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


# --- folders: one owner for publish, retire, durable copy and link-to-free-name -----------------------------

def test_publish_folder_renames_a_whole_folder_and_refuses_to_clobber_one(tmp_path):
    tmp = tmp_path / ".tmp-model-1"
    (tmp / "sub").mkdir(parents=True)
    (tmp / "config.json").write_text("{}")
    (tmp / "sub" / "weights").write_bytes(b"w" * 10)
    tmp.chmod(0o700)  # as mkdtemp makes it
    final = publish_folder(tmp, tmp_path / "model")
    assert final == tmp_path / "model" and not tmp.exists()
    assert (final / "sub" / "weights").read_bytes() == b"w" * 10
    assert final.stat().st_mode & 0o777 == 0o755, "every user of the home reads a published folder"
    other = tmp_path / ".tmp-model-2"
    other.mkdir()
    (other / "config.json").write_text('{"new": 1}')
    with pytest.raises(OSError):
        publish_folder(other, final)
    assert json.loads((final / "config.json").read_text()) == {}, "an existing folder is never replaced by accident"


def test_publish_folder_with_replace_keeps_the_old_one_until_the_new_one_is_in_place(tmp_path):
    final = tmp_path / "step-000004"
    final.mkdir()
    (final / "state.json").write_text("old")
    tmp = tmp_path / ".tmp-step-000004-x"
    tmp.mkdir()
    (tmp / "state.json").write_text("new")
    publish_folder(tmp, final, replace=True)
    assert (final / "state.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000004"], "the old copy is removed afterwards"


def test_retire_folder_removes_it_out_of_sight_and_a_missing_one_is_no_error(tmp_path):
    folder = tmp_path / "snap"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "f").write_text("x")
    retire_folder(folder)
    assert list(tmp_path.iterdir()) == []
    retire_folder(folder)  # already gone


def test_durable_copy_replaces_the_target_whole_with_a_readable_mode(tmp_path):
    src, dst = tmp_path / "a.bin", tmp_path / "out" / "a.bin"
    src.write_bytes(b"x" * (3 << 20))
    dst.parent.mkdir()
    dst.write_bytes(b"old")
    durable_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes() and dst.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in dst.parent.iterdir()] == ["a.bin"], "no temporary file left"


def test_link_to_free_name_numbers_taken_names_and_falls_back_to_rename_without_hard_links(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "batch.jsonl").write_text("taken\n")
    first = inbox / ".one.tmp"
    first.write_text("one\n")
    assert link_to_free_name(first, inbox, "batch") == inbox / "batch-2.jsonl"
    assert (inbox / "batch.jsonl").read_text() == "taken\n" and (inbox / "batch-2.jsonl").read_text() == "one\n"

    def no_hard_links(src, dst):  # a filesystem without hard links (some FUSE and network mounts) says EPERM
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    second = inbox / ".two.tmp"
    second.write_text("two\n")
    assert link_to_free_name(second, inbox, "batch") == inbox / "batch-3.jsonl"
    assert (inbox / "batch-3.jsonl").read_text() == "two\n" and not second.exists()
    assert (inbox / "batch-2.jsonl").read_text() == "one\n", "the fallback never replaces a file"
