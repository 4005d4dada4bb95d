"""Generator throughput: SYLLO puzzles made and serialised per second, per level, each level bounded to 2 s.

    .venv/bin/python bench/generator_throughput.py [--seconds 2]

Prints one JSON line: the time to import the generator and build its vocabulary (once per process), and
puzzles/s for levels 1, 3 and 5 (``make_puzzle`` + the JSON of its training record, what ``/generate`` streams).
Compare two trees by running it with each on PYTHONPATH, back to back: the machine's load moves the numbers.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="time per level")
    args = ap.parse_args()
    t0 = time.perf_counter()
    from trainingd.generator import puzzles

    puzzles.make_puzzle(0, 0, 1)  # builds the vocabulary where it is built lazily
    out: dict = {"import_and_build_s": round(time.perf_counter() - t0, 3)}
    for level in (1, 3, 5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            for i in range(500):
                json.dumps(puzzles.make_puzzle(1, n + i, level).record())
            n += 500
        out[f"level{level}_puzzles_per_s"] = round(n / (time.perf_counter() - start))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
