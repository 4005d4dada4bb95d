#!/usr/bin/env python3
"""Run the trainingd daemon in the foreground.

    python3 training_daemon.py --home DIR [--once] [--max-jobs N] [--log-level INFO]
    python3 training_daemon.py --help          # options and the exit-code table

In the background, with a pid file: ``bin/launch_training_daemon.sh --home DIR``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from trainingd.daemon.loop import main  # noqa: E402 - needs the path above when run from elsewhere

if __name__ == "__main__":
    sys.exit(main())
