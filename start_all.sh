#!/usr/bin/env bash
# Start the trainingd stack on a home (default: this folder): bootstrap .venv, initialise the home, start the daemon.
#
#   ./start_all.sh [--home DIR]
#
# Then drop chat JSONL into DIR/inbox/ (try: cp examples/sample_chat.jsonl inbox/) and watch it with
#   .venv/bin/python training_controller.py status --watch
# Stop everything with: .venv/bin/python training_controller.py stop   (or: touch .stop)
# Exit codes: 0 started; 1 not started (a daemon already runs for this home, or it failed: see logs/); 2 usage.
set -euo pipefail
repo="$(cd "$(dirname "$0")" && pwd)"
home="$repo"
case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  --home) [ -n "${2:-}" ] || { echo "start_all.sh: --home needs a folder" >&2; exit 2; }; home="$2" ;;
  "") ;;
  *) echo "start_all.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
esac

"$repo/bin/bootstrap.sh" --config "$(realpath -m "$home/config.json")"  # it installs what that config asks for
"$repo/.venv/bin/python" -m trainingd init --home "$home"
"$repo/bin/launch_training_daemon.sh" --home "$home"
echo "trainingd: drop *.jsonl files into $home/inbox/ ; status: $repo/.venv/bin/python $repo/training_controller.py --home $home status"
