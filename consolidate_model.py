#!/usr/bin/env python3
"""Fold the live adapter into a new, verified, versioned base under consolidated_models/<stamp>/.

    python3 consolidate_model.py --description "what was trained" [--yes] [--home DIR] [--json]
    python3 consolidate_model.py --switch consolidated_models/<stamp> [--home DIR]
    python3 consolidate_model.py --list [--home DIR]

Exit 0 when written (and verified), 1 when refused or the verification failed (nothing new left behind).
"""

import sys

from trainingd.lifecycle.consolidate import main

if __name__ == "__main__":
    sys.exit(main())
