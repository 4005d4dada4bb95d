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

Training and evaluation never share a puzzle: the word list is split once, by a fixed rule, into training
words and held-out words (about one in five), and ``/eval`` puzzles are built only from held-out words in a
separate seed space (``make_eval_puzzle``). Passing the held-out set means the model learned to join syllables,
not to recall the training words.

    from trainingd.generator.puzzles import make_puzzle, check_answer
    p = make_puzzle(seed=7, index=0, level=1); check_answer(p, p.answer) -> True
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field

LEVELS = {1: (1, 0, True), 2: (2, 0, True), 3: (3, 2, True), 4: (4, 4, False), 5: (5, 6, False)}
MIN_LEVEL, MAX_LEVEL = 1, max(LEVELS)

# word split into syllables | a short clue. Lowercase ASCII words, each spelled exactly by its syllables.
_WORDS = """
ba-na-na|a long yellow fruit
to-ma-to|a red fruit used as a vegetable
po-ta-to|a starchy tuber
ap-ple|a round fruit that keeps the doctor away
or-ange|a citrus fruit and a colour
le-mon|a sour yellow citrus fruit
mel-on|a large sweet fruit with many seeds
cher-ry|a small red fruit with a stone
gar-den|where flowers and vegetables grow
win-dow|a glass opening in a wall
ta-ble|furniture you eat at
pen-cil|a tool for writing that can be erased
pa-per|thin sheets made from wood pulp
rab-bit|a small animal with long ears
mon-key|a primate that climbs trees
tur-tle|a reptile with a shell
dra-gon|a fire-breathing beast of legend
ti-ger|a large striped cat
li-on|the king of the jungle
el-e-phant|a large grey animal with a trunk
kan-ga-roo|an animal that hops and carries a pouch
dol-phin|a clever sea mammal
pen-guin|a bird that cannot fly but swims
but-ter|a spread made from cream
cof-fee|a hot drink made from roasted beans
sug-ar|it makes things sweet
cook-ie|a small sweet baked treat
pic-nic|a meal eaten outdoors
sum-mer|the warmest season
win-ter|the coldest season
au-tumn|the season when leaves fall
mor-ning|the early part of the day
eve-ning|the end of the day
yes-ter-day|the day before today
to-mor-row|the day after today
mu-sic|sounds arranged in time
pi-a-no|an instrument with black and white keys
gui-tar|an instrument with six strings
vi-o-lin|a small string instrument played with a bow
trum-pet|a brass instrument
doc-tor|a person who treats the sick
teach-er|a person who teaches a class
farm-er|a person who grows crops
sail-or|a person who works on a ship
pi-lot|a person who flies a plane
rock-et|it flies into space
plan-et|a world that circles a star
o-cean|a huge body of salt water
riv-er|water that flows to the sea
is-land|land surrounded by water
moun-tain|a very high hill
for-est|a large area of trees
des-ert|a dry sandy place
val-ley|low land between hills
can-dle|a wax stick that gives light
bas-ket|a woven container
bot-tle|a container for liquids
blan-ket|a warm cover for a bed
pil-low|a soft rest for your head
mir-ror|you see yourself in it
lad-der|you climb it to reach high places
ham-mer|a tool for nails
bub-ble|a thin ball of soap and air
pup-py|a young dog
kit-ten|a young cat
ba-by|a very young child
fam-i-ly|parents and their children
hap-py|feeling glad
sil-ver|a shiny grey metal
gold-en|the colour of gold
yel-low|the colour of the sun
pur-ple|a colour mixing red and blue
cir-cle|a round shape
num-ber|one two or three
sev-en|the number after six
e-lev-en|the number after ten
hun-dred|ten times ten
sec-ond|one sixtieth of a minute
min-ute|sixty seconds
hol-i-day|a day off work
birth-day|the day you were born
pres-ent|a gift
mar-ket|a place to buy food
hos-pi-tal|a place for the sick
li-brar-y|a place to borrow books
mu-se-um|a place to see old things
pal-ace|a home for a king
cas-tle|a stone fortress
bridge-way|a path that crosses over
tun-nel|a passage under the ground
jack-et|a short coat
but-ton|it fastens a shirt
pock-et|a small bag sewn into clothes
slip-per|a soft shoe for the house
sand-wich|bread with a filling
pan-cake|a flat cake made in a pan
noo-dle|a long thin strip of pasta
cab-bage|a leafy green vegetable
car-rot|an orange root vegetable
pump-kin|a large orange squash
on-ion|a vegetable that makes you cry
gar-lic|a strong smelling bulb
pep-per|a spice or a vegetable
hon-ey|sweet food made by bees
chick-en|a farm bird that lays eggs
spi-der|it has eight legs and spins webs
bee-tle|an insect with hard wings
but-ter-fly|an insect with colourful wings
ea-gle|a large bird of prey
par-rot|a bird that can talk
rob-in|a small bird with a red breast
sal-mon|a fish that swims upstream
lob-ster|a sea creature with claws
ze-bra|a striped horse of africa
gi-raffe|the animal with the longest neck
cam-el|an animal with humps
don-key|a small relative of the horse
hel-met|a hard hat
wag-on|a cart with four wheels
bi-cy-cle|it has two wheels and pedals
mo-tor|an engine
com-pu-ter|a machine that runs programs
pro-gram|instructions for a computer
ro-bot|a machine that acts on its own
cam-er-a|it takes photos
ra-di-o|it plays broadcasts
tel-e-phone|you call people with it
let-ter|a written message or a sign of the alphabet
win-ner|the one who comes first
sto-ry|a tale
pic-ture|an image
won-der|to be curious
whis-per|to speak very softly
wa-ter|a clear liquid we drink
fin-ger|part of a hand
el-bow|the joint in the middle of the arm
shoul-der|where the arm joins the body
stom-ach|where food is digested
hand-some|good looking
sun-set|when the sun goes down
rain-bow|colours in the sky after rain
thun-der|the sound after lightning
snow-man|a figure made of snow
sea-son|one of four parts of the year
cap-tain|the leader of a ship
sol-dier|a member of an army
dan-cer|a person who dances
sing-er|a person who sings
paint-er|a person who paints
bak-er|a person who bakes bread
driv-er|a person who drives
writ-er|a person who writes books
"""


@dataclass(frozen=True)
class Word:
    text: str
    syllables: tuple[str, ...]
    clue: str


def _parse_words() -> tuple[Word, ...]:
    words = []
    for line in _WORDS.strip().splitlines():
        split, clue = line.split("|")
        syllables = tuple(split.split("-"))
        words.append(Word("".join(syllables), syllables, clue.strip()))
    return tuple(words)


WORDS: tuple[Word, ...] = _parse_words()


def _is_held_out(word: Word) -> bool:
    # A fixed rule (not a seed): the split never changes between runs, machines or versions of Python.
    return hashlib.sha256(word.text.encode()).digest()[0] % 5 == 0


EVAL_WORDS = tuple(w for w in WORDS if _is_held_out(w))
TRAIN_WORDS = tuple(w for w in WORDS if not _is_held_out(w))
_ALL_SYLLABLES = tuple(sorted({s for w in WORDS for s in w.syllables}))

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


def _build(rng: random.Random, pool: tuple[Word, ...], level: int, pid: str) -> Puzzle:
    n_words, n_distract, show_counts = LEVELS[level]
    chosen = rng.sample(pool, n_words)
    bank = [s for w in chosen for s in w.syllables]
    if n_distract:
        used = set(bank)
        bank += rng.sample([s for s in _ALL_SYLLABLES if s not in used], n_distract)
    rng.shuffle(bank)
    clues = tuple(f"{w.clue} ({len(w.syllables)} syllables)" if show_counts else w.clue for w in chosen)
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
    rng = _rng(0, seed, level, index)
    return _build(rng, TRAIN_WORDS, level, f"train-{seed}-{level}-{index}")


def make_eval_puzzle(seed: int, index: int, level: int = 1) -> Puzzle:
    """Held-out puzzle: only held-out words, and its own seed space (never a training seed's stream)."""
    _check_level(level)
    rng = _rng(1, seed, level, index)
    return _build(rng, EVAL_WORDS, level, f"eval-{seed}-{level}-{index}")


def generate(count: int, seed: int, level: int = 1, *, held_out: bool = False):
    """Yield ``count`` puzzles of one stream."""
    make = make_eval_puzzle if held_out else make_puzzle
    for i in range(count):
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


def check_answer(puzzle: Puzzle | dict, answer: str) -> bool:
    """True when ``answer`` names the hidden words in clue order, each spelled from unused bank syllables.

    ``puzzle`` is a Puzzle or its ``syllo`` record (``{"words": [...], "bank": [...]}``).
    """
    words = list(puzzle.words) if isinstance(puzzle, Puzzle) else list(puzzle["words"])
    bank = list(puzzle.bank) if isinstance(puzzle, Puzzle) else list(puzzle["bank"])
    given = normalise_answer(answer)
    if given != words:
        return False
    # The words must also be buildable from the bank, each syllable used once (guards a corrupted record).
    remaining = list(bank)
    by_text = {w.text: w for w in WORDS}
    for text in given:
        w = by_text.get(text)
        if w is None:
            return False
        for s in w.syllables:
            if s not in remaining:
                return False
            remaining.remove(s)
    return True
