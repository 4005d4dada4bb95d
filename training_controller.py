#!/usr/bin/env python3
"""Steer the training daemon: pause, resume, stop, skip; show its status.

    python3 training_controller.py status [--json | --watch] [--home DIR]
    python3 training_controller.py pause|resume|stop|skip [--wait [--timeout S]] [--home DIR]

--home and --json go before or after the command. Exit codes: see --help.
"""

import sys

from trainingd.cli.main import controller_main

if __name__ == "__main__":
    sys.exit(controller_main())
