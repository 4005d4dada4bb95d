"""``python -m trainingd [--home DIR] COMMAND`` (``init``, ``status``, ``queue list``...: see trainingd.cli)."""

import sys

from .cli import main

sys.exit(main())
