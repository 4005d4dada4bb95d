#!/usr/bin/env bash
# Run the test suite (bootstraps .venv with the test extras first). Extra arguments go to pytest.
#
#   ./run_tests.sh                 everything, slow end-to-end tests included
#   ./run_tests.sh -m "not slow"   the fast part only
#   ./run_tests.sh -n 0            in one process (the default is one worker per core, a test file to each)
set -euo pipefail
cd "$(dirname "$0")"
bin/bootstrap.sh --test
# The monitor page's browser tests drive Debian's Chromium (never a downloaded browser); they fail without it.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  echo "run_tests: installing Debian's chromium for the browser tests"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
set +e
# One worker per core, at most 4 (pytest-xdist), each given whole test files so a module's fixtures are built
# once; every process of a test runs one torch thread (tests/conftest.py), so the workers do not oversubscribe.
.venv/bin/python -m pytest -n auto --maxprocesses 4 --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$rc"
