#!/usr/bin/env bash
# QLoRA training check on a Qwen3-0.6B-shaped model (built locally, no download): one table of tokens/s, peak GPU
# memory against the memory plan, and MFU for batch vs token-budget micro-batches, packing and flash-attention.
#   bench/gpu_check.sh            # on a GPU box
#   bench/gpu_check.sh --tiny     # anywhere, CPU included (same code path, a 2-layer model)
# Options are passed to bench/gpu_check.py (--steps, --batch-size, --max-length, --lora-r, --peak-tflops, --no-qlora).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
exec "$PY" bench/gpu_check.py "$@"
