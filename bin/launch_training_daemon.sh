#!/usr/bin/env bash
# Start the trainingd daemon of a home in the background (single instance per home): = trainingd start.
#
#   bin/launch_training_daemon.sh [--home DIR] [--once] [--max-jobs N] [--log-level L]
#
# Home: --home DIR > $TRAININGD_HOME > the current directory. The daemon's own flock on DIR/.daemon.lock
# is the guard ("running" means "the lock is held", not "the pid is alive"), so a stale .daemon.pid never
# blocks a start. Exit 0 once the daemon holds the lock and has written DIR/.daemon.pid; exit 1 with a
# message when a daemon already runs for this home or the daemon could not start (see
# DIR/logs/daemon_stdout.log). Python: $PYTHON, else the repository's .venv, else python3.
# The code is trainingd.instance.start_daemon, run from this checkout.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" -m trainingd start "$@"
