#!/usr/bin/env python3
"""Manage the job queue of a home.

    python3 training_queue.py add FILE [--priority high|normal|low] [--force] [--home DIR]
    python3 training_queue.py list [--state S] [--json]
    python3 training_queue.py status [--json]
    python3 training_queue.py retry ID
    python3 training_queue.py remove ID [--skip-if-running]

--home and --json go before or after the command. Exit codes: see --help.
"""

import sys

from trainingd.cli.main import queue_main

if __name__ == "__main__":
    sys.exit(queue_main())
