#!/usr/bin/env bash
# Apply a preset (presets/NAME.json) to config.json atomically; the same as `trainingd preset`.
#
#   ./toggle_preset.sh NAME [--yes] [--approve] [--home DIR]
#   ./toggle_preset.sh --list
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="$here/.venv/bin/python"
[ -x "$py" ] || py=python3
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" exec "$py" -m trainingd preset "$@"
