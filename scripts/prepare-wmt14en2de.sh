#!/usr/bin/env bash
# WMT'14 English-German: see scripts/prepare-wmt14.sh for the steps.
#
# Usage: bash scripts/prepare-wmt14en2de.sh [OUT_DIR]      (default: work/wmt14_en_de)
#   OFFLINE_DIR=DIR  BPE=subword_nmt|fastbpe  BPE_MERGES=40000  WORKERS=$(nproc)
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/prepare-wmt14.sh" de "$@"
