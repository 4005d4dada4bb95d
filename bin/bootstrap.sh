#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent, fast when nothing changed).
#
#   bin/bootstrap.sh [--test]     --test also installs the test extras (pytest, trl)
#
# torch is installed first, pinned, when missing: the pin takes the CPU wheel on a CPU-only machine and the
# CUDA build on a GPU machine; an unpinned torch would pull a multi-GB CUDA build everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN="torch==2.13.0"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "bootstrap: installing $TORCH_PIN"
  .venv/bin/python -m pip install -q "$TORCH_PIN"
fi
# Reinstall the project only when its dependency list changed (an install with the test extras covers a plain one).
stamp=".venv/.trainingd-installed${extras:+-test}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
installed() { [ -f "$1" ] && [ "$(cat "$1")" = "$want" ]; }
if ! installed "$stamp" && ! { [ -z "$extras" ] && installed ".venv/.trainingd-installed-test"; }; then
  echo "bootstrap: installing trainingd${extras} and its dependencies"
  .venv/bin/python -m pip install -q -e ".${extras}"
  echo "$want" > "$stamp"
fi
