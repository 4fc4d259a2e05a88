#!/usr/bin/env bash
# WMT'14 English-French: see scripts/prepare-wmt14.sh for the steps.
#
# Usage: bash scripts/prepare-wmt14en2fr.sh [OUT_DIR]      (default: work/wmt14_en_fr)
#   OFFLINE_DIR=DIR  BPE=subword_nmt|fastbpe  BPE_MERGES=40000  WORKERS=$(nproc)
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/prepare-wmt14.sh" fr "$@"
