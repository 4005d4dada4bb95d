#!/usr/bin/env python3
"""Fine-tune a LoRA/QLoRA adapter on one JSONL file.

    python3 train.py --dataset data.jsonl --model models/tiny-qwen3 --output-dir out --epochs 1
    python3 train.py --dataset more.jsonl --model out --output-dir out2      # continue an adapter
    python3 train.py ... --resume                                            # after a stop (exit 5)

``python3 train.py --help`` lists every option. The logic lives in ``trainingd.train``.
"""

import sys

from trainingd.train.__main__ import standalone_main

if __name__ == "__main__":
    sys.exit(standalone_main())
