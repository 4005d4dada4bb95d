"""SYLLO syllable puzzles: deterministic per seed, levels 1 (easy) to 5 (hard), every answer checkable by code.

A puzzle shows a shuffled bank of syllables and one clue per hidden word; the answer is the words the
syllables form, one per line, in clue order. Higher levels hide more words, add distractor syllables that
belong to no answer, and drop the syllable counts from the clues:

    level  words  distractors  clue shows syllable count
      1      1        0             yes
      2      2        0             yes
      3      3        2             yes
      4      4        4             no
      5      5        6             no

The words come from two pinned packages made for this, not from a hand-written list: the most frequent
lowercase ASCII words of 4 to 12 letters in ``wordfreq`` that ``pyphen``'s ``en_US`` hyphenation dictionary cuts
into syllables, ``VOCABULARY_SIZE`` of them in frequency order. They are built once by
``trainingd.generator.vocabulary`` and shipped as ``vocabulary.txt``, so the generator needs neither package to
run, and a test checks the file against the pinned packages.

Clues. Neither package ships definitions (WordNet's packages download their data at run time, which a box
without network cannot do), so a clue states what code can check and what, with the bank, makes the puzzle
solvable: the first letter and the number of letters (``starts with b, 6 letters (3 syllables)``). Joining
the bank's syllables into an English word that fits is the skill. It is fair because ``check_answer``
accepts *any* answer that fits: each word either is the hidden one or is another vocabulary word with the
same first letter and length, and all of them together are spelled from the bank, each syllable used at
most once. A model is never marked wrong for a second solution the clues allow.

Training and evaluation never share a word: the vocabulary is split once, by a fixed rule (a hash of the word,
not a seed), into training words and held-out words (about one in five), and ``/eval`` puzzles are built only
from held-out words, with distractors from held-out syllables, in a separate seed space
(``make_eval_puzzle``). Passing the held-out set means the model learned to join syllables, not to recall the
training words.

    from trainingd.generator.puzzles import make_puzzle, check_answer
    p = make_puzzle(seed=7, index=0, level=1); check_answer(p, p.answer) -> True
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field

from trainingd.generator import vocabulary as vocabulary_file

LEVELS = {1: (1, 0, True), 2: (2, 0, True), 3: (3, 2, True), 4: (4, 4, False), 5: (5, 6, False)}
MIN_LEVEL, MAX_LEVEL = 1, max(LEVELS)

VOCABULARY_SIZE = vocabulary_file.SIZE


@dataclass(frozen=True)
class Word:
    text: str
    syllables: tuple[str, ...]
    clue: str = ""
    """What the puzzle says of the word (built once: the generator makes tens of thousands of puzzles a second)."""
    counted_clue: str = ""
    """The clue with the syllable count (levels 1-3)."""

    @classmethod
    def of(cls, text: str, syllables: tuple[str, ...]) -> "Word":
        clue = f"starts with {text[0]}, {len(text)} letters"
        return cls(text, syllables, clue, f"{clue} ({len(syllables)} syllables)")


@functools.cache
def vocabulary() -> tuple[Word, ...]:
    """The generator's words, most frequent first (read once per process from the shipped vocabulary.txt)."""
    return tuple(Word.of("".join(syllables), syllables) for syllables in vocabulary_file.load())


def _is_held_out(word: Word) -> bool:
    # A fixed rule (not a seed): the split never changes between runs, machines or versions of Python.
    return hashlib.sha256(word.text.encode()).digest()[0] % 5 == 0


@functools.cache
def _split() -> tuple[tuple[Word, ...], tuple[Word, ...]]:
    words = vocabulary()
    return tuple(w for w in words if not _is_held_out(w)), tuple(w for w in words if _is_held_out(w))


@functools.cache
def _syllables_of(held_out: bool) -> tuple[str, ...]:
    """Distractor syllables of one side of the split (a held-out puzzle never shows a training word's syllable)."""
    pool = _split()[1 if held_out else 0]
    return tuple(sorted({s for w in pool for s in w.syllables}))


@functools.cache
def _by_text() -> dict[str, Word]:
    return {w.text: w for w in vocabulary()}


def __getattr__(name: str):
    # WORDS, TRAIN_WORDS and EVAL_WORDS are built on first use: importing this module (the daemon, the
    # trainer's evaluation) costs nothing until a puzzle is made.
    if name == "WORDS":
        return vocabulary()
    if name == "TRAIN_WORDS":
        return _split()[0]
    if name == "EVAL_WORDS":
        return _split()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Short on purpose: on a CPU every prompt token is paid for in training time.
INSTRUCTIONS = "SYLLO: join bank syllables (each once) into the word for each clue. Answer one word per line."


@dataclass(frozen=True)
class Puzzle:
    """One puzzle; ``answer`` is the reference text the assistant turn carries."""

    id: str
    level: int
    words: tuple[str, ...]
    bank: tuple[str, ...]
    clues: tuple[str, ...]
    prompt: str = field(repr=False)

    @property
    def answer(self) -> str:
        return "\n".join(self.words)

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.answer}]

    def record(self, *, with_answer_fields: bool = False) -> dict:
        """A chat line for training; with ``with_answer_fields`` also the puzzle itself (for evaluation)."""
        doc: dict = {"messages": self.messages()}
        if with_answer_fields:
            doc["syllo"] = {"id": self.id, "level": self.level, "words": list(self.words), "bank": list(self.bank)}
        return doc


def _build(rng: random.Random, held_out: bool, level: int, pid: str) -> Puzzle:
    n_words, n_distract, show_counts = LEVELS[level]
    chosen = rng.sample(_split()[1 if held_out else 0], n_words)
    bank = [s for w in chosen for s in w.syllables]
    if n_distract:
        # Rejection sampling: thousands of syllables, a handful used, so a draw almost never repeats.
        syllables, taken = _syllables_of(held_out), set(bank)
        while n_distract:
            s = syllables[rng.randrange(len(syllables))]
            if s not in taken:
                taken.add(s)
                bank.append(s)
                n_distract -= 1
    rng.shuffle(bank)
    clues = tuple(w.counted_clue if show_counts else w.clue for w in chosen)
    lines = [INSTRUCTIONS, "Bank: " + " | ".join(bank)]
    lines += [f"Clue {i}: {c}" for i, c in enumerate(clues, 1)]
    return Puzzle(pid, level, tuple(w.text for w in chosen), tuple(bank), clues, "\n".join(lines))


def _check_level(level: int) -> int:
    if level not in LEVELS:
        raise ValueError(f"level must be {MIN_LEVEL}..{MAX_LEVEL}, got {level}")
    return level


def _rng(space: int, seed: int, level: int, index: int) -> random.Random:
    # One integer per (space, seed, level, index), never shared by two of them: seeding with an int is several
    # times faster than with a string, which matters at 100,000 puzzles a request.
    if seed < 0 or not 0 <= index < 1 << 40:
        raise ValueError(f"seed must be >= 0 and index in [0, 2**40), got {seed}, {index}")
    return random.Random(((((seed << 3) | level) << 40 | index) << 1) | space)


def make_puzzle(seed: int, index: int, level: int = 1) -> Puzzle:
    """Training puzzle ``index`` of the stream ``seed``: the same arguments always give the same puzzle."""
    _check_level(level)
    return _build(_rng(0, seed, level, index), False, level, f"train-{seed}-{level}-{index}")


def make_eval_puzzle(seed: int, index: int, level: int = 1) -> Puzzle:
    """Held-out puzzle: only held-out words, and its own seed space (never a training seed's stream)."""
    _check_level(level)
    return _build(_rng(1, seed, level, index), True, level, f"eval-{seed}-{level}-{index}")


def generate(count: int, seed: int, level: int = 1, *, held_out: bool = False, review: float = 0.0,
             review_from: int = MIN_LEVEL):
    """Yield ``count`` puzzles of one stream.

    ``review``: the share of training puzzles drawn from the levels ``review_from`` .. ``level - 1`` instead
    (each puzzle's choice and lower level are fixed by its seed and index), so that a model moved on to a harder
    level keeps what the easier ones taught it. Held-out sets are always of their one level.
    """
    make = make_eval_puzzle if held_out else make_puzzle
    lower = range(max(MIN_LEVEL, review_from), level)
    for i in range(count):
        if review > 0 and not held_out and lower:
            pick = random.Random(f"review-{seed}-{level}-{i}")
            if pick.random() < review:
                yield make_puzzle(seed, i, pick.choice(lower))
                continue
        yield make(seed, i, level)


_SPLIT = re.compile(r"[\s,;|]+")


def normalise_answer(text: str) -> list[str]:
    """The words of an answer: lowercase, split on whitespace/commas, stray punctuation and numbering removed."""
    out = []
    for tok in _SPLIT.split(text.strip().lower()):
        tok = re.sub(r"^\d+[.):]|[^a-z-]", "", tok).replace("-", "")
        if tok:
            out.append(tok)
    return out


def _fits(given: str, hidden: str) -> bool:
    """``given`` answers the clue of ``hidden``: the hidden word itself, or a vocabulary word of its first letter
    and length."""
    return given == hidden or (given in _by_text() and len(given) == len(hidden) and given[0] == hidden[0])


def _spell(words: list[str], bank: Counter) -> bool:
    """All ``words`` can be spelled, in turn, from the bank's syllables, each used at most once (backtracking)."""
    if not words:
        return True
    word, rest = words[0], words[1:]

    def pieces(pos: int) -> bool:
        if pos == len(word):
            return _spell(rest, bank)
        for s in list(bank):
            if bank[s] > 0 and word.startswith(s, pos):
                bank[s] -= 1
                ok = pieces(pos + len(s))
                bank[s] += 1
                if ok:
                    return True
        return False

    return pieces(0)


def check_answer(puzzle: Puzzle | dict, answer: str) -> bool:
    """True when ``answer`` gives, in clue order, one word per clue that fits it, all spelled from the bank.

    A word fits its clue when it is the hidden word or another vocabulary word with the same first letter and
    length; the words together must be spelled from bank syllables, each used at most once. ``puzzle`` is a
    Puzzle or its ``syllo`` record (``{"words": [...], "bank": [...]}``).
    """
    words = list(puzzle.words) if isinstance(puzzle, Puzzle) else list(puzzle["words"])
    bank = list(puzzle.bank) if isinstance(puzzle, Puzzle) else list(puzzle["bank"])
    given = normalise_answer(answer)
    if len(given) != len(words) or not all(_fits(g, w) for g, w in zip(given, words)):
        return False
    # The words must also be buildable from the bank (guards a corrupted record, and judges a second solution).
    return _spell(given, Counter(bank))
