"""What a trainer's exit means for its job (``trainingd.daemon.outcome.decide``), one row per branch, in-process.

Run: .venv/bin/python -m pytest tests/test_outcome.py -q
The daemon tests (test_daemon.py, test_steering.py, test_never_lose.py, ...) run the same decisions end to end.
"""

from __future__ import annotations

import pytest

from trainingd import exit_codes as ec
from trainingd.daemon.outcome import SKIP_REASON, Facts, Outcome, decide, is_disk_full, needs_log, reason_text

REASON = "line 3 is not JSON\n  detail"

# (row id, facts, expected fields of the outcome; every field not named must keep its default)
TABLE = [
    ("ok_done_with_follow_ups", Facts(ec.OK, "j1", REASON),
     dict(state="done", result="ok", snapshot_and_evaluate=True)),
    ("ok_after_skip_is_too_late", Facts(ec.OK, "j1", REASON, skip_wanted=True),
     dict(state="done", result="ok", snapshot_and_evaluate=True,
          acks=(("skip", "too late: the job had already finished"),))),
    ("ok_promoted_by_the_gate_is_an_ordinary_done", Facts(ec.OK, "j1", REASON, gate_outcome="promoted"),
     dict(state="done", result="ok", snapshot_and_evaluate=True)),
    ("ok_rejected_by_the_gate_is_done_without_follow_ups",
     Facts(ec.OK, "j1", REASON, gate_outcome="rejected", gate_reason="worse"),
     dict(state="done", result="rejected", reason="worse", gate_rejected=True,
          note="job j1: the gate rejected the candidate (worse); kept as a snapshot, the live adapter is unchanged")),
    ("skip_honoured", Facts(ec.SKIPPED, "j1", REASON, skip_wanted=True),
     dict(state="failed", result="skipped", reason=SKIP_REASON, retire_checkpoints=True, acks=(("skip", "skipped"),))),
    ("skip_holds_over_a_crash", Facts(ec.CRASH, "j1", REASON, skip_wanted=True, attempts=9),
     dict(state="failed", result="skipped", reason=SKIP_REASON, retire_checkpoints=True,
          acks=(("skip", "skipped (the trainer ended first: crash)"),))),
    ("skip_holds_over_a_stop", Facts(ec.STOPPED, "j1", REASON, skip_wanted=True),
     dict(state="failed", result="skipped", reason=SKIP_REASON, retire_checkpoints=True,
          acks=(("skip", "skipped (the trainer ended first: stopped)"),))),
    ("skip_holds_over_a_config_error_and_stops", Facts(ec.CONFIG_ERROR, "j1", REASON, skip_wanted=True),
     dict(state="failed", result="skipped", reason=SKIP_REASON, retire_checkpoints=True,
          acks=(("skip", "skipped (the trainer ended first: config_error)"),),
          error=f"trainer refused the configuration: {REASON}", stop_for_config=True)),
    ("adapter_mismatch_holds_the_home", Facts(ec.ADAPTER_MISMATCH, "j1", REASON),
     dict(state="pending", condition="adapter_mismatch", error=f"{REASON}: no job starts until this is resolved")),
    ("data_error_fails_with_its_reason", Facts(ec.DATA_ERROR, "j1", REASON),
     dict(state="failed", result="data_error", reason=REASON, keep_result=True, error="line 3 is not JSON")),
    ("checkpoint_mismatch_fails", Facts(ec.CHECKPOINT_MISMATCH, "j1", REASON),
     dict(state="failed", result="checkpoint_mismatch", reason=REASON, keep_result=True, error="line 3 is not JSON")),
    ("usage_fails_first_even_when_skipped", Facts(ec.USAGE, "j1", REASON, skip_wanted=True),
     dict(state="failed", result="usage", reason=REASON, keep_result=True, error="line 3 is not JSON",
          acks=(("skip", "the job failed first (usage)"),))),
    ("skipped_without_a_pending_request", Facts(ec.SKIPPED, "j1", REASON),
     dict(state="failed", result="skipped", reason=SKIP_REASON, acks=(("skip", "skipped"),))),
    ("stopped_on_its_own_goes_back_with_a_note", Facts(ec.STOPPED, "j1", REASON),
     dict(state="pending", note="job j1: trainer stopped on its own; it stays at the head of the queue")),
    ("stopped_by_the_daemon_goes_back", Facts(ec.STOPPED, "j1", REASON, stopping=True),
     dict(state="pending")),
    ("config_error_requeues_and_stops", Facts(ec.CONFIG_ERROR, "j1", REASON),
     dict(state="pending", error=f"trainer refused the configuration: {REASON}", stop_for_config=True)),
    ("killed_on_the_stop_ladder_counts_no_attempt", Facts(-15, "j1", REASON, stopping=True, ended_by_us=True,
                                                           disk_full=True, machines_missing=True),
     dict(state="pending")),
    ("missing_machines_count_no_attempt", Facts(ec.CRASH, "j1", REASON, machines_missing=True, disk_full=True,
                                                join_timeout_s=30.0, home="/h"),
     dict(state="pending", error="job j1: not every machine joined its process group within 30.0 s (start trainingd "
                                 "node --home /h --machine-rank R on each other machine); no attempt counted, "
                                 "it starts again")),
    ("full_disk_backs_off", Facts(ec.CRASH, "j1", REASON, disk_full=True),
     dict(state="pending", disk_full="the trainer of job j1 ran out of disk space (crash); the job is back at the "
                                     "head of its queue. Free space in the home")),
    ("crash_counts_an_attempt_and_retries", Facts(ec.CRASH, "j1", REASON, attempts=0, max_attempts=3),
     dict(state="pending", attempts=1, error="trainer crash on job j1 (attempt 1 of 3); retrying")),
    ("stopping_but_not_ended_by_us_still_counts", Facts(-9, "j1", REASON, stopping=True, attempts=1, max_attempts=3),
     dict(state="pending", attempts=2, error="trainer killed_by_signal_9 on job j1 (attempt 2 of 3); retrying")),
    ("last_attempt_fails_with_the_log", Facts(ec.CRASH, "j1", REASON, attempts=2, max_attempts=3, log_tail="boom",
                                              skip_wanted=False),
     dict(state="failed", result="crash", attempts=3, error="job j1 failed after 3 attempts (crash)",
          reason="trainer failed 3 times (last: crash); giving up.\nLast lines of logs/training_output.log:\nboom\n"
                 "Fix the cause, then: training_queue.py retry j1")),
]


@pytest.mark.parametrize("facts, expected", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_each_exit_maps_to_one_outcome(facts: Facts, expected: dict) -> None:
    assert decide(facts) == Outcome(**expected)


def test_a_crash_while_a_skip_is_pending_counts_an_attempt_only_without_the_skip() -> None:
    # A skip wins over a crash: no attempt is counted for a job that is skipped anyway.
    assert decide(Facts(ec.CRASH, "j1", REASON, skip_wanted=True)).attempts is None
    assert decide(Facts(ec.CRASH, "j1", REASON)).attempts == 1


@pytest.mark.parametrize("code, skip, stopping, by_us, expected", [
    (ec.OK, False, False, False, False), (ec.DATA_ERROR, True, False, False, False),
    (ec.STOPPED, False, True, True, False), (ec.CRASH, True, False, False, False),
    (ec.CRASH, False, True, True, False), (ec.CRASH, False, True, False, True), (-9, False, False, False, True),
])
def test_the_log_is_read_only_when_the_decision_needs_it(code: int, skip: bool, stopping: bool, by_us: bool,
                                                         expected: bool) -> None:
    assert needs_log(code, skip, stopping, by_us) is expected


def test_a_full_disk_is_seen_in_the_result_or_in_the_log() -> None:
    assert is_disk_full({"details": [{"errno": "ENOSPC"}]}, "")
    assert is_disk_full({}, "OSError: [Errno 28] No space left on device")
    assert not is_disk_full({"details": ["x"]}, "Traceback: ValueError")


def test_the_reason_names_the_log_when_the_trainer_gave_none() -> None:
    assert reason_text({}, "crash") == "trainer exited crash without a reason; see logs/training_output.log"
    assert reason_text({"reason": "bad", "details": ["a", {"b": 1}]}, "data_error") == "bad\n  a\n  {'b': 1}"
