#!/usr/bin/env python3
"""Print the per-module LoRA update norms of a saved adapter, or the change between two snapshots.

    python3 lora_monitor.py [--home DIR] [--adapter DIR] [--compare DIR2] [--json]

See ``trainingd/train/layer_report.py``.
"""

import sys

from trainingd.train.layer_report import main

if __name__ == "__main__":
    sys.exit(main())
