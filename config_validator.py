#!/usr/bin/env python3
"""Check a trainingd config.json: unknown keys (with a suggestion), wrong types, missing base model.

    python3 config_validator.py [--home DIR | FILE] [--json]

Prints "ok" (exit 0) or one line naming the offending key (exit 3); see --help.
"""

import sys

from trainingd.cli import validator_main

if __name__ == "__main__":
    sys.exit(validator_main())
