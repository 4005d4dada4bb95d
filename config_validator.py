#!/usr/bin/env python3
"""Check a trainingd config.json and its home, or approve a locked-key change for the live adapter.

    python3 config_validator.py [--home DIR | FILE] [--json]
    python3 config_validator.py --approve [--who NAME] [--home DIR]      (= trainingd config approve)

With a FILE only the config is checked (unknown keys with a suggestion, types, the base model). For a home
(the default) the home is checked too: its folders, the base model's config, the locked keys and the base's
content hash against the live adapter; every problem is listed, exit 3. See --help.
"""

import sys

from trainingd.cli.validator import main

if __name__ == "__main__":
    sys.exit(main())
