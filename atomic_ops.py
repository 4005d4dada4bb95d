#!/usr/bin/env python3
"""The atomic file helpers scripts use, re-exported from ``trainingd.atomic_ops`` (stdlib only).

    from atomic_ops import atomic_write_json, durable_rename
    atomic_write_json("status.json", {"ok": True})     # tmp in the same folder, fsync, os.replace, fsync folder
"""

from trainingd.atomic_ops import (append_jsonl, atomic_create_text, atomic_write_bytes, atomic_write_json,
                                  atomic_write_text, claim_by_rename, durable_rename, file_sha256, fsync_dir,
                                  json_safe, read_json, read_jsonl)

__all__ = ["append_jsonl", "atomic_create_text", "atomic_write_bytes", "atomic_write_json", "atomic_write_text",
           "claim_by_rename", "durable_rename", "file_sha256", "fsync_dir", "json_safe", "read_json", "read_jsonl"]
