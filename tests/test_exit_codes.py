"""Exit codes: two enums (the trainer's and the command lines'), numbers fixed, each name its own.

    .venv/bin/python -m pytest -q tests/test_exit_codes.py
"""

from __future__ import annotations

from trainingd import exit_codes as ec
from trainingd.exit_codes import CliExit, TrainerExit


def test_the_numbers_on_disk_and_in_scripts_do_not_move():
    assert {c.name: int(c) for c in TrainerExit} == {
        "OK": 0, "CRASH": 1, "USAGE": 2, "CONFIG_ERROR": 3, "DATA_ERROR": 4, "STOPPED": 5, "SKIPPED": 6,
        "CHECKPOINT_MISMATCH": 7, "ADAPTER_MISMATCH": 8}
    assert {c.name: int(c) for c in CliExit} == {"OK": 0, "ERROR": 1, "USAGE": 2, "CONFIG_ERROR": 3, "TIMEOUT": 4,
                                                 "ALREADY_RUNNING": 75}
    assert (ec.CRASH, ec.ERROR, ec.DATA_ERROR, ec.TIMEOUT, ec.ALREADY_RUNNING) == (1, 1, 4, 4, 75)


def test_a_command_lines_error_is_named_error_and_a_trainers_exit_1_crash():
    assert ec.name_of(ec.ERROR) == "error" and ec.name_of(ec.TIMEOUT) == "timeout"
    assert ec.name_of(ec.CRASH) == "crash" and ec.name_of(1) == "crash", "a trainer's exit status is a plain int"
    assert ec.name_of(ec.DATA_ERROR) == ec.name_of(4) == "data_error"
    assert ec.name_of(-9) == "killed_by_signal_9" and ec.name_of(42) == "exit_42"
    assert ec.NAMES == {int(c): c.name.lower() for c in TrainerExit}


def test_each_table_uses_the_codes_of_its_own_side():
    for command, rows in ec.TABLES.items():
        side = TrainerExit if command == "train.py" else CliExit
        assert all(isinstance(r.code, side) for r in rows), command
    assert "  1  crash: unexpected error" in ec.TRAINER_HELP and "  1  error or refused" in ec.CONTROLLER_HELP
