"""The SYLLO generator: puzzles, checker, held-out split, and the HTTP service on an ephemeral port.

Run: .venv/bin/python -m pytest tests/test_generator.py -q
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from trainingd.generator.puzzles import (EVAL_WORDS, LEVELS, TRAIN_WORDS, WORDS, check_answer, make_eval_puzzle,
                                         make_puzzle, normalise_answer)
from trainingd.generator.server import serve_in_thread

REPO = Path(__file__).resolve().parent.parent
VOCABULARY_SHA256 = "324a8ba6740f8d59a0b34efb43d3e395db335327deec59f06c779fc82c0ef064"


@pytest.fixture(scope="module")
def generator_url():
    server, url = serve_in_thread("127.0.0.1", 0)
    yield url
    server.shutdown()
    server.server_close()


def get_lines(url: str) -> list[dict]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return [json.loads(line) for line in r.read().decode().splitlines()]


def test_every_word_is_spelled_by_its_syllables_and_the_split_is_disjoint():
    assert len({w.text for w in WORDS}) == len(WORDS) >= 5000
    assert all("".join(w.syllables) == w.text and len(w.syllables) >= 2 for w in WORDS)
    assert {w.text for w in TRAIN_WORDS}.isdisjoint({w.text for w in EVAL_WORDS})
    assert len(EVAL_WORDS) >= 1000 and len(TRAIN_WORDS) >= 4000
    assert len(TRAIN_WORDS) + len(EVAL_WORDS) == len(WORDS)


def test_the_vocabulary_and_its_split_are_fixed():
    # A different list would move the held-out split and make old learning curves incomparable, so a change of
    # the shipped file must change this digest on purpose.
    text = "\n".join("-".join(w.syllables) for w in WORDS)
    assert hashlib.sha256(text.encode()).hexdigest() == VOCABULARY_SHA256


def test_the_shipped_vocabulary_is_what_the_pinned_wordfreq_and_pyphen_give():
    from trainingd.generator import vocabulary

    assert vocabulary.render(vocabulary.build()) == vocabulary.FILE.read_text(encoding="ascii")
    out = subprocess.run([sys.executable, "-m", "trainingd.generator.vocabulary", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0 and "matches" in out.stdout


def test_making_puzzles_needs_neither_word_package_at_run_time():
    # The GPU image has neither, and wordfreq alone (58 MB) would not fit the device carry.
    code = ("import sys; sys.modules['wordfreq'] = sys.modules['pyphen'] = None; "
            "import trainingd.generator.puzzles as p; print(len(p.WORDS), p.make_puzzle(0, 0).level)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["8000", "1"]


def test_clues_name_first_letter_and_length_and_a_second_fitting_word_is_accepted():
    p = make_puzzle(0, 3, 1)
    (word,) = p.words
    assert p.clues[0].startswith(f"starts with {word[0]}, {len(word)} letters")
    # Another vocabulary word of the same first letter and length, spelled from the bank, answers the clue too.
    other = next(w for w in WORDS if w.text != word and w.text[0] == word[0] and len(w.text) == len(word))
    record = {"words": [word], "bank": list(p.bank) + list(other.syllables)}
    assert check_answer(record, other.text) and check_answer(record, word)
    # Bank syllables joined in an order that fits the clue but spells no word are not an answer.
    known = {w.text for w in WORDS}
    w3 = next(w for w in TRAIN_WORDS if len(w.syllables) == 3 and w.syllables[0] + w.syllables[2] + w.syllables[1]
              not in known)
    fake = w3.syllables[0] + w3.syllables[2] + w3.syllables[1]
    assert not check_answer({"words": [w3.text], "bank": list(w3.syllables)}, fake)
    assert check_answer({"words": [w3.text], "bank": list(w3.syllables)}, w3.text)
    # Each syllable once: two answers cannot share the bank's only copy of a syllable.
    w = TRAIN_WORDS[0]
    assert not check_answer({"words": [w.text, w.text], "bank": list(w.syllables)}, f"{w.text}\n{w.text}")


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_checker_accepts_every_generated_answer(level):
    for i in range(300):
        for p in (make_puzzle(3, i, level), make_eval_puzzle(3, i, level)):
            assert check_answer(p, p.answer), p
            assert check_answer(p.record(with_answer_fields=True)["syllo"], p.messages()[-1]["content"])
            assert len(p.words) == LEVELS[level][0]


def test_checker_rejects_wrong_answers():
    p = make_puzzle(1, 0, 3)
    assert not check_answer(p, "")
    assert not check_answer(p, "\n".join(reversed(p.words)))  # clue order matters
    assert not check_answer(p, "\n".join(p.words[:-1]))  # a word missing
    assert not check_answer(p, p.answer + "\nbanana")  # one too many
    assert not check_answer(p, p.answer.replace(p.words[0], p.words[0][:-1]))  # misspelt
    # The right words but a bank that cannot spell them: a corrupted record is not accepted.
    assert not check_answer({"words": list(p.words), "bank": ["xx"]}, p.answer)


def test_checker_tolerates_case_commas_and_numbering():
    p = make_puzzle(1, 4, 2)
    a, b = p.words
    assert check_answer(p, f"{a.upper()}, {b}.")
    assert check_answer(p, f"1. {a}\n2. {b}\n")
    assert normalise_answer(" Ba-na-na ") == ["banana"]


def test_puzzles_are_deterministic_per_seed_and_differ_between_seeds():
    assert make_puzzle(5, 17, 4) == make_puzzle(5, 17, 4)
    batch = [make_puzzle(5, i, 2).prompt for i in range(50)]
    assert batch == [make_puzzle(5, i, 2).prompt for i in range(50)]
    assert batch != [make_puzzle(6, i, 2).prompt for i in range(50)]


def test_eval_puzzles_never_share_a_word_or_prompt_with_training():
    eval_words = {w.text for w in EVAL_WORDS}
    train_prompts = {make_puzzle(s, i, 1).prompt for s in range(3) for i in range(500)}
    for i in range(500):
        p = make_eval_puzzle(0, i, 1)
        assert set(p.words) <= eval_words
        assert p.prompt not in train_prompts
    assert all(set(make_puzzle(9, i, 3).words).isdisjoint(eval_words) for i in range(300))


def test_levels_get_harder():
    easy, hard = make_puzzle(2, 0, 1), make_puzzle(2, 0, 5)
    assert len(easy.bank) < len(hard.bank) and "syllables)" in easy.prompt and "syllables)" not in hard.prompt
    with pytest.raises(ValueError):
        make_puzzle(2, 0, 9)


def test_generate_endpoint_streams_chat_jsonl(generator_url):
    lines = get_lines(f"{generator_url}/generate?count=250&seed=4&level=2")
    assert len(lines) == 250
    assert lines[0] == make_puzzle(4, 0, 2).record()
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in lines)
    assert get_lines(f"{generator_url}/generate?count=250&seed=4&level=2") == lines


def test_eval_endpoint_gives_answers_and_no_training_puzzle(generator_url):
    lines = get_lines(f"{generator_url}/eval?count=40&seed=0&level=1")
    train_lines = get_lines(f"{generator_url}/generate?count=2000&seed=0&level=1")
    assert len(lines) == 40 and len(train_lines) == 2000, "the checks below say nothing about an empty answer"
    train = {json.dumps(r) for r in train_lines}
    for r in lines:
        assert check_answer(r["syllo"], r["messages"][-1]["content"])
        assert json.dumps({"messages": r["messages"]}) not in train


def test_healthz_and_bad_requests(generator_url):
    with urllib.request.urlopen(f"{generator_url}/healthz", timeout=10) as r:
        assert json.load(r)["ok"] is True
    for bad in ("/generate?count=x", "/generate?level=0", "/eval?count=0", "/nope"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(generator_url + bad, timeout=10)
        assert e.value.code in (400, 404)


def test_body_is_chunked_so_a_cut_body_is_detectable(generator_url):
    host, port = generator_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/generate?count=10&seed=1")
    resp = conn.getresponse()
    assert resp.getheader("Transfer-Encoding") == "chunked"
    assert resp.getheader("X-Syllo-Count") == "10"
    assert len(resp.read().splitlines()) == 10
    conn.close()


def test_trainingd_generator_command_serves(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "trainingd", "generator", "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("trainingd generator: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        assert len(get_lines(f"{url}/generate?count=3&seed=1")) == 3
    finally:
        proc.terminate()
        proc.wait(10)
