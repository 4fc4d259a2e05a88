#!/usr/bin/env bash
# Train a big model on WMT'14 En-De or En-Fr with the settings of Ott et al. (2018), "Scaling
# Neural Machine Translation" (fairseq's examples/scaling_nmt): Adam, lr 1e-3 for the large
# batch, inverse-sqrt with 4000 warm-up updates from 1e-7, label smoothing 0.1, 3584 tokens
# per GPU on 128 GPUs (8 GPUs with --update-freq 16), fp16. Dropout 0.3 for En-De; En-Fr
# keeps the architecture's 0.1. ARCH selects EA or fairseq's transformer.
#
# Usage: bash scripts/train-wmt14.sh de|fr [PREP_DIR] [SAVE_DIR]
#            (scripts/train-wmt14en2de.sh and train-wmt14en2fr.sh call this)
#   ARCH=ea_transformer_vaswani_wmt_en_de_big (En-Fr: ..._en_fr_big)  MAX_UPDATE=30000  SEED=1
#   EXTRA_ARGS="..."   NGPU, FP16, NNODES, DRY_RUN: see scripts/_train.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$ROOT/scripts/_train.sh"

TGT=${1:-}
case "$TGT" in de|fr) ;; *) echo "usage: bash scripts/train-wmt14.sh de|fr [PREP_DIR] [SAVE_DIR] (got '$TGT')" >&2; exit 2 ;; esac
PREP=${2:-$ROOT/work/wmt14_en_$TGT}
ARCH=${ARCH:-ea_transformer_vaswani_wmt_en_${TGT}_big}
SEED=${SEED:-1}
SAVE_DIR=${3:-$ROOT/work/checkpoints/wmt14_en_$TGT/$ARCH-seed$SEED}
MAX_UPDATE=${MAX_UPDATE:-30000}
EXTRA_ARGS=${EXTRA_ARGS:-}
REF_GPUS=128
REF_MAX_TOKENS=3584
DROPOUT=(); [ "$TGT" = de ] && DROPOUT=(--dropout 0.3)

# shellcheck disable=SC2086
launch_training "$PREP/data-bin" --arch "$ARCH" --share-all-embeddings \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 \
  --lr 0.001 --lr-scheduler inverse_sqrt --warmup-updates 4000 --warmup-init-lr 1e-07 \
  "${DROPOUT[@]}" --weight-decay 0.0 \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --max-update "$MAX_UPDATE" --keep-last-epochs 10 --seed "$SEED" --save-dir "$SAVE_DIR" \
  --log-format simple --log-interval 100 $EXTRA_ARGS
