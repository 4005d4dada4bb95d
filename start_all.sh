#!/usr/bin/env bash
# Start the trainingd stack on a home (default: this folder): bootstrap .venv, initialise the home, start the daemon.
#
#   ./start_all.sh [--home DIR]
#
# Then drop chat JSONL into DIR/inbox/ (try: cp examples/sample_chat.jsonl inbox/) and watch it with
#   .venv/bin/python training_controller.py status --watch
# Stop everything with: .venv/bin/python training_controller.py stop   (or: touch .stop)
set -euo pipefail
repo="$(cd "$(dirname "$0")" && pwd)"
home="$repo"
if [ "${1:-}" = "--home" ] && [ -n "${2:-}" ]; then home="$2"; fi

"$repo/bin/bootstrap.sh"
"$repo/.venv/bin/python" -m trainingd init --home "$home"
"$repo/bin/launch_training_daemon.sh" --home "$home"
echo "trainingd: drop *.jsonl files into $home/inbox/ ; status: $repo/.venv/bin/python $repo/training_controller.py --home $home status"
