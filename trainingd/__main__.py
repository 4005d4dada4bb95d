"""``python -m trainingd init [--home DIR]`` (and every other ``trainingd`` subcommand; see trainingd.cli)."""

import sys

from .cli import main

sys.exit(main())
