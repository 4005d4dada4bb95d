#!/usr/bin/env bash
# Start the trainingd stack on a home (default: this folder): bootstrap .venv, initialise the home, start the daemon,
# the web monitor, and the SYLLO generator when config.json has auto_generate.enabled.
#
#   ./start_all.sh [--home DIR] [--monitor-port PORT]
#
# Then drop chat JSONL into DIR/inbox/ (try: cp examples/sample_chat.jsonl inbox/) and watch it with
#   .venv/bin/python training_controller.py status --watch
# or in a browser at the monitor's URL (printed; default http://127.0.0.1:8080/live_monitor_ui_v2.html).
# The monitor (log: DIR/logs/monitor_stdout.log) exits by itself once the daemon stops; when it cannot start (its
# port is taken, or a monitor already serves this home) the daemon still runs and this script says so.
# Stop everything with: .venv/bin/python training_controller.py stop   (or: touch .stop)
# Exit codes: 0 started (the daemon; the monitor too unless a line says otherwise); 1 not started (a daemon
# already runs for this home, or it failed: see logs/); 2 usage.
set -euo pipefail
repo="$(cd "$(dirname "$0")" && pwd)"
home="$repo"
monitor_port=8080
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --home) [ -n "${2:-}" ] || { echo "start_all.sh: --home needs a folder" >&2; exit 2; }; home="$2"; shift 2 ;;
    --monitor-port)
      [[ "${2:-}" =~ ^[0-9]+$ ]] || { echo "start_all.sh: --monitor-port needs a port number" >&2; exit 2; }
      monitor_port="$2"; shift 2 ;;
    *) echo "start_all.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

"$repo/bin/bootstrap.sh" --config "$(realpath -m "$home/config.json")"  # it installs what that config asks for
"$repo/.venv/bin/python" -m trainingd init --home "$home"
"$repo/bin/launch_training_daemon.sh" --home "$home"
home="$(cd "$home" && pwd -P)"
echo "trainingd: drop *.jsonl files into $home/inbox/ ; status: $repo/.venv/bin/python $repo/training_controller.py --home $home status"

python="${PYTHON:-$repo/.venv/bin/python}"
# The SYLLO generator, when config.json turns auto_generate on with a loopback url and nothing answers there yet;
# it exits with the daemon (log: DIR/logs/generator_stdout.log).
gen="$("$python" - "$home/config.json" <<'PY'
import json, sys, urllib.parse, urllib.request
ag = json.load(open(sys.argv[1])).get("auto_generate") or {}
u = urllib.parse.urlsplit(ag.get("url") or "http://127.0.0.1:8091")
if ag.get("enabled") and u.hostname in ("127.0.0.1", "localhost", "::1"):
    try:
        urllib.request.urlopen(f"{u.scheme}://{u.netloc}/healthz", timeout=2)
    except OSError:
        print(u.hostname, u.port or 80)
PY
)"
if [[ -n "$gen" ]]; then
  read -r gen_host gen_port <<<"$gen"
  nohup setsid "$python" -m trainingd generator --home "$home" --host "$gen_host" --port "$gen_port" \
    --exit-with-daemon </dev/null >>"$home/logs/generator_stdout.log" 2>&1 &
  echo "trainingd generator (pid $!): http://$gen_host:$gen_port (auto_generate is on)"
fi

# The monitor: in its own session like the daemon, tied to the daemon's life by --exit-with-daemon.
out="$home/logs/monitor_stdout.log"
nohup setsid "$python" "$repo/launch_live_monitor.py" --home "$home" --port "$monitor_port" --exit-with-daemon \
  </dev/null >>"$out" 2>&1 &
monitor=$!
# It writes .monitor.pid once it listens on its port; until then it may still refuse (port taken, one running).
for _ in $(seq 1 300); do
  if ! kill -0 "$monitor" 2>/dev/null; then
    rc=0
    wait "$monitor" || rc=$?
    reason="$(tail -n 1 "$out" 2>/dev/null || true)"
    echo "start_all.sh: the daemon runs, but the monitor did not start (exit $rc): ${reason:-see $out}" >&2
    echo "start_all.sh: for a monitor on another port: $python $repo/launch_live_monitor.py --home $home" \
      "--port PORT --exit-with-daemon &" >&2
    exit 0
  fi
  if [[ "$(cat "$home/.monitor.pid" 2>/dev/null)" == "$monitor" ]]; then
    echo "trainingd monitor (pid $monitor): http://127.0.0.1:$monitor_port/live_monitor_ui_v2.html"
    exit 0
  fi
  sleep 0.1
done
echo "start_all.sh: the daemon runs, but the monitor (pid $monitor) did not listen within 30s; see $out" >&2
