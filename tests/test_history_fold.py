"""The daemon's fold over status/history.jsonl reads only what was appended, and folds a replaced file again.

Run: .venv/bin/python -m pytest tests/test_history_fold.py -q
"""

from __future__ import annotations

import json
import os

from trainingd.config import AutoGenerateConfig, CurriculumConfig
from trainingd.contracts.eval_result import trained_so_far, trained_start, trained_step
from trainingd.daemon.autogen import AutoGenerator, CurriculumFold, curriculum_level
from trainingd.daemon.history_fold import JsonlFold
from trainingd.lifecycle import gate
from trainingd.paths import Home


def test_only_appended_complete_lines_are_folded_and_a_replaced_file_is_folded_again(tmp_path):
    path = tmp_path / "history.jsonl"
    seen: list[dict] = []
    fold = JsonlFold(path, list, lambda acc, e: acc + [e] if not seen.append(e) else acc)
    assert fold.update() == []  # no file yet
    path.write_text('{"a": 1}\nnot json\n[1]\n{"a": 2')  # a torn last line waits
    assert [e["a"] for e in fold.update()] == [1]
    with open(path, "a") as f:
        f.write('}\n{"a": 3}\n')
    assert [e["a"] for e in fold.update()] == [1, 2, 3]
    assert [e["a"] for e in seen] == [1, 2, 3], "each line is parsed once"
    assert fold.update() == fold.value and len(seen) == 3
    tmp = tmp_path / "new.jsonl"
    tmp.write_text('{"a": 9}\n')
    os.replace(tmp, path)  # another inode: folded from its start
    assert [e["a"] for e in fold.update()] == [9]


def test_the_daemon_folds_give_what_a_full_read_gives(tmp_path):
    home = Home.at(tmp_path)
    home.history.parent.mkdir(parents=True)
    cfg = AutoGenerateConfig(enabled=True, curriculum=CurriculumConfig(promote_at=0.8, min_evals=2, plateau_evals=2))
    lines = [{"kind": "eval", "level": 1 if i < 4 else 2, "exact_match": em, "job_id": f"j{i}", "finished_at": "t"}
             for i, em in enumerate([0.1, 0.3, 0.25, 0.2, 0.1, 0.85, 0.9, 0.95])]
    lines[3:3] = [{"state": "done", "result": "rejected", "job_id": "r1", "gate": {"outcome": "rejected"}},
                  {"state": "done", "result": "rejected", "job_id": "r2", "gate": {"outcome": "rejected"}},
                  {"state": "done", "result": "ok", "job_id": "ok1", "kept": 7, "tokens": 70}]
    gen = AutoGenerator(home)
    gate_fold = JsonlFold(home.history, lambda: (0, None), gate.history_step)
    trained = JsonlFold(home.history, trained_start, trained_step)
    for k, line in enumerate(lines, 1):
        with open(home.history, "a") as f:
            f.write(json.dumps(line) + "\n")
        assert gen.curriculum(cfg) == curriculum_level(cfg, lines[:k])
        assert gate.status_block(gate_fold.update(), enabled=True, limit=3) == \
            gate.status_block(lines[:k], enabled=True, limit=3)
        assert trained.update() == trained_so_far(home)
    assert trained.value == {"trained_jobs": 1, "trained_examples": 7, "trained_tokens": 70}
    assert gen.curriculum(cfg)["level"] == 3, "a plateau at level 1, mastery at level 2"
    # Another config folds the whole history again.
    off = AutoGenerateConfig(enabled=True, curriculum=CurriculumConfig(enabled=False))
    assert gen.curriculum(off)["level"] == 1 and isinstance(CurriculumFold(off).feed(lines[0]), CurriculumFold)
