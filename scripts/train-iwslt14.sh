#!/usr/bin/env bash
# Train on IWSLT'14 De-En with fairseq's published transformer_iwslt_de_en settings
# (examples/translation: Adam, lr 5e-4, inverse-sqrt with 4000 warm-up updates, dropout 0.3,
# weight decay 1e-4, label smoothing 0.1, 4096 tokens per update on one GPU).
# The same script trains fairseq's transformer (ARCH=transformer_iwslt_de_en), so both sides
# of a comparison get identical settings.
#
# Usage: bash scripts/train-iwslt14.sh [PREP_DIR] [SAVE_DIR]
#            (default: work/iwslt14.tokenized.de-en and work/checkpoints/iwslt14/ARCH-seedSEED)
#   ARCH=ea_transformer_iwslt_de_en  MAX_EPOCH=50  SEED=1  EXTRA_ARGS="..." (more fairseq options)
#   NGPU, FP16, NNODES, DRY_RUN: see scripts/_train.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$ROOT/scripts/_train.sh"

PREP=${1:-$ROOT/work/iwslt14.tokenized.de-en}
ARCH=${ARCH:-ea_transformer_iwslt_de_en}
SEED=${SEED:-1}
SAVE_DIR=${2:-$ROOT/work/checkpoints/iwslt14/$ARCH-seed$SEED}
MAX_EPOCH=${MAX_EPOCH:-50}
EXTRA_ARGS=${EXTRA_ARGS:-}
REF_GPUS=1
REF_MAX_TOKENS=4096

# shellcheck disable=SC2086
launch_training "$PREP/data-bin" --arch "$ARCH" --share-decoder-input-output-embed \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 \
  --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 \
  --dropout 0.3 --weight-decay 0.0001 \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --max-epoch "$MAX_EPOCH" --keep-last-epochs 10 --seed "$SEED" --save-dir "$SAVE_DIR" \
  --log-format simple --log-interval 100 $EXTRA_ARGS
