#!/usr/bin/env bash
# Run the test suite (after 'bash scripts/setup.sh --test').
#
# Usage: bash scripts/test.sh [PYTEST_ARGS...]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
python -m pytest -q -p no:cacheprovider tests "$@"
