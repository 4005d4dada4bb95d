#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): correctness on CUDA and speed against TRL on the same card, one table.
#   bench/gpu_wheels.sh                   # here, before: the wheels the GPU image lacks, into .whl/
#   bench/gpu_check.sh                    # on the GPU machine (carry .whl): installs them, then ~8 minutes
#   bench/gpu_check.sh --tiny             # anywhere, this CPU included: the same code paths on tiny models
# Options go to bench/gpu_check.py (--part, --steps, --seconds-per-run, --budget-s, --no-trl, --out).
# The table and the raw JSON go to $OUT (when set) as gpu_check.txt and gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# On a machine without the project's venv (the GPU image), the carried wheels go to a folder of their own,
# first on the path; the image's torch, transformers, peft and accelerate stay.
if [ "$PY" = python3 ] && compgen -G ".whl/*.whl" >/dev/null; then
  SITE="${TRAININGD_WHEEL_SITE:-/tmp/trainingd-site}"
  if [ ! -f "$SITE/.installed" ]; then
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl
    touch "$SITE/.installed"
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PY" bench/gpu_check.py "$@"
