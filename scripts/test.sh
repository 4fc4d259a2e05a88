#!/usr/bin/env bash
# Run the test suite (after 'bash scripts/setup.sh --test').
#
# Usage: bash scripts/test.sh [PYTEST_ARGS...] [TEST_FILES...]
#   with no TEST_FILES (paths, or path::test ids), the whole of tests/
#   VENV=DIR   the virtualenv to use when none is active (as for setup.sh)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
TARGETS=(tests)
for arg in "$@"; do
  if [ -e "${arg%%::*}" ]; then TARGETS=(); break; fi
done
python -m pytest -q -rfEs -p no:cacheprovider "${TARGETS[@]}" "$@"
