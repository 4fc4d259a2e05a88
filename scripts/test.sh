#!/usr/bin/env bash
# Run the test suite (after 'bash scripts/setup.sh --test').
#
# Usage: bash scripts/test.sh [PYTEST_ARGS...] [TEST_FILES...]
#   with no TEST_FILES (paths, or path::test ids), the whole of tests/
#   VENV=DIR   the virtualenv to use when none is active (as for setup.sh)
#   TEST_WORKERS=N   test processes (pytest-xdist; default 2, one test file per process
#                    at a time; 1 runs everything in this process)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
TARGETS=(tests)
for arg in "$@"; do
  if [ -e "${arg%%::*}" ]; then TARGETS=(); break; fi
done
TEST_WORKERS=${TEST_WORKERS:-2}
case "$TEST_WORKERS" in
  ''|*[!0-9]*|0) echo "test.sh: TEST_WORKERS must be a positive integer, got '$TEST_WORKERS'" >&2; exit 2 ;;
esac
WORKERS=()
if [ "$TEST_WORKERS" -gt 1 ]; then
  python -c "import xdist" 2>/dev/null || {
    echo "test.sh: pytest-xdist is missing: run 'bash scripts/setup.sh --test', or TEST_WORKERS=1" >&2
    exit 2
  }
  WORKERS=(-n "$TEST_WORKERS" --dist loadfile)
fi
python -m pytest -q -rfEs -p no:cacheprovider "${WORKERS[@]}" "${TARGETS[@]}" "$@"
