#!/usr/bin/env bash
# Start the trainingd daemon of a home in the background (single instance per home).
#
#   bin/launch_training_daemon.sh [--home DIR] [daemon options...]
#
# Home: --home DIR > $TRAININGD_HOME > the current directory. The daemon's own flock on DIR/.daemon.lock
# is the guard ("running" means "the lock is held", not "the pid is alive"), so a stale .daemon.pid never
# blocks a start. Exit 0 once the daemon holds the lock and has written DIR/.daemon.pid; exit 1 with a
# message when a daemon already runs for this home or the daemon could not start (see
# DIR/logs/daemon_stdout.log). Python: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
home="${TRAININGD_HOME:-$PWD}"
args=()  # the daemon's other options, passed through
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --home) home="${2:-}"; shift 2 || shift ;;
    --home=*) home="${1#--home=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [[ -z "$home" ]]; then
  echo "launch_training_daemon: --home needs a folder" >&2
  exit 1
fi
mkdir -p "$home/logs"
home="$(cd "$home" && pwd -P)"

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo/.venv/bin/python" ]]; then python="$repo/.venv/bin/python"; else python="python3"; fi
fi

running_pid() { cat "$home/.daemon.pid" 2>/dev/null || echo unknown; }

# Fast refusal: a daemon holds the lock (flock(1) takes the same kind of lock as the daemon).
if command -v flock >/dev/null 2>&1 && [[ -e "$home/.daemon.lock" ]]; then
  if ! flock -n "$home/.daemon.lock" true; then
    echo "trainingd daemon already running for $home (pid $(running_pid)); not starting another" >&2
    exit 1
  fi
fi

out="$home/logs/daemon_stdout.log"
# setsid: the daemon gets its own session, so closing this terminal does not signal it.
nohup setsid "$python" "$repo/training_daemon.py" --home "$home" ${args[@]+"${args[@]}"} </dev/null >>"$out" 2>&1 &
child=$!

# Wait until the daemon has taken the lock and written its pid, or has exited (e.g. lost a race: 75).
for _ in $(seq 1 600); do
  if ! kill -0 "$child" 2>/dev/null; then
    rc=0
    wait "$child" || rc=$?
    if [[ $rc -eq 75 ]]; then
      echo "trainingd daemon already running for $home (pid $(running_pid)); not starting another" >&2
    else
      echo "launch_training_daemon: the daemon exited with code $rc; see $out" >&2
      tail -n 5 "$out" >&2 || true
    fi
    exit 1
  fi
  if [[ "$(cat "$home/.daemon.pid" 2>/dev/null)" == "$child" ]]; then
    echo "trainingd daemon started for $home (pid $child); log: $home/logs/"
    exit 0
  fi
  sleep 0.1
done
echo "launch_training_daemon: the daemon (pid $child) did not write $home/.daemon.pid within 60s" >&2
exit 1
