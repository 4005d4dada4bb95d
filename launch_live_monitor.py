#!/usr/bin/env python3
"""Serve the live monitor of a home: JSON and Prometheus endpoints, read-only, on 127.0.0.1 by default.

    python3 launch_live_monitor.py [--home DIR] [--host 127.0.0.1] [--port 8080]

Endpoints: see --help or trainingd/monitor/server.py. Stop with Ctrl-C.
"""

import sys

from trainingd.cli.main import monitor_main

if __name__ == "__main__":
    sys.exit(monitor_main())
