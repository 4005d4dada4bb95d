"""``python -m trainingd [--home DIR] COMMAND`` (``init``, ``status``, ``queue list``...: see trainingd.cli.main)."""

import sys

from trainingd.cli.main import main

sys.exit(main())
