#!/usr/bin/env bash
# A rehearsal of bench/gpu_check.sh as the GPU image runs it, on this CPU: a Python 3.12 venv with the image's
# versions (torch 2.11, transformers 5.17, accelerate 1.15, peft, ...; no project venv), a copy of the committed
# tree with the carried .whl/, the wheels installed the way gpu_check.sh installs them there (--no-index
# --no-deps --target), then `gpu_check.sh --tiny`. Needs a python3.12 (PYTHON312=...) and about 4 GB of downloads
# once (PyPI's torch 2.11 is its CUDA build; it runs on the CPU here).
#   bench/gpu_wheels.sh && bench/image_rehearsal.sh        # the table goes to $OUT or /tmp/image-rehearsal/out
set -euo pipefail
cd "$(dirname "$0")/.."
PY312="${PYTHON312:-$(command -v python3.12 || echo /root/.pyenv/versions/3.12.1/bin/python)}"
WORK="${REHEARSAL_DIR:-/tmp/image-rehearsal}"
compgen -G ".whl/*.whl" >/dev/null || { echo "no .whl/: run bench/gpu_wheels.sh first" >&2; exit 2; }
mkdir -p "$WORK"
if [ ! -x "$WORK/venv/bin/python" ]; then
  "$PY312" -m venv "$WORK/venv"
fi
# The image's versions of what the check imports from it (the device notes), and the image packages the carried
# wheels need (xxhash, jinja2).
"$WORK/venv/bin/pip" install -q torch==2.11.0 "transformers==5.17.*" "accelerate==1.15.*" peft safetensors \
  tokenizers psutil nvidia-ml-py pyarrow pandas xxhash jinja2 requests
rm -rf "$WORK/tree" "$WORK/site"
git worktree prune
git worktree add -q --detach "$WORK/tree" HEAD
cp -r .whl "$WORK/tree/"
trap 'git worktree remove --force "$WORK/tree"' EXIT
cd "$WORK/tree"
PATH="$WORK/venv/bin:$PATH" TRAININGD_WHEEL_SITE="$WORK/site" OUT="${OUT:-$WORK/out}" bash bench/gpu_check.sh --tiny
