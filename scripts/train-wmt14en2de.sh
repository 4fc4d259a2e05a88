#!/usr/bin/env bash
# Train on WMT'14 English-German: see scripts/train-wmt14.sh for the settings.
#
# Usage: bash scripts/train-wmt14en2de.sh [PREP_DIR] [SAVE_DIR]      (default: work/wmt14_en_de)
#   ARCH  MAX_UPDATE  SEED  EXTRA_ARGS  NGPU  FP16  NNODES  DRY_RUN
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/train-wmt14.sh" de "$@"
