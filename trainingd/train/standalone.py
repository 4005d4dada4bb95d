"""``trainingd train`` (and ``train.py``): train an adapter on one file outside the daemon.

    trainingd train --dataset FILE --model NAME --output-dir DIR --epochs N [--use-qlora] [--resume]
    python -m trainingd.train.standalone ...          what ``trainingd train`` runs (the trainer is this process)
"""

import sys

from trainingd.train.__main__ import standalone_main

if __name__ == "__main__":
    sys.exit(standalone_main())
