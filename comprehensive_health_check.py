#!/usr/bin/env python3
"""Check a trainingd home and say how to fix each problem (also: ``trainingd doctor``).

    python3 comprehensive_health_check.py [--home DIR] [--json] [--min-free-gb N]

Exit 0 when healthy, 1 when any check fails; see --help.
"""

import sys

from trainingd.checks.health import health_main

if __name__ == "__main__":
    sys.exit(health_main())
