"""``python -m trainingd.train.merge`` with one weight off by a little after the merge: its check must fail.

    python tests/tools/spoiled_merge.py BASE ADAPTER OUT --report FILE   (tests/test_consolidate.py runs it)
"""

from __future__ import annotations

import sys

import torch

from trainingd.train import merge


def spoil(model) -> None:
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "q_proj" in n).add_(0.05)


if __name__ == "__main__":
    sys.exit(merge.main(after_merge=spoil))
