#!/usr/bin/env python3
"""Where every job of a home is; ``--check`` compares the queue, the status file and the checkpoints.

    python3 state_tracker.py [--home DIR] [--check] [--json]

Exit 1 when ``--check`` finds an inconsistency; see --help.
"""

import sys

from trainingd.checks.health import state_main

if __name__ == "__main__":
    sys.exit(state_main())
