#!/usr/bin/env bash
# Turn a trained fairseq transformer into an EA-Transformer by fine-tuning: the EA model
# gets the plain checkpoint's architecture and weights (its convolutions start fresh),
# optimizer, data loader, meters and lr schedule start anew, and alpha and beta ramp up
# linearly from 0 over the first RAMP_UPDATES updates, so training starts from exactly
# what the plain model computes.
#
# Usage: bash scripts/finetune-ea.sh PLAIN_CHECKPOINT PREP_DIR SAVE_DIR
#   PREP_DIR holds data-bin/ (scripts/prepare-*.sh); checkpoints go to SAVE_DIR.
#   RAMP_UPDATES=1000  MAX_UPDATE=10000  SEED=1
#   LR=5e-4 WARMUP=4000 WEIGHT_DECAY=0.0001 MAX_TOKENS=4096 (fairseq's IWSLT'14 settings;
#   the model's dropout is the checkpoint's unless EXTRA_ARGS says otherwise)
#   EA_ARGS="--ea-alpha 0.8 ..."  EXTRA_ARGS="..." (more fairseq-train options, last wins)
#   NGPU, FP16, NNODES, DRY_RUN: see scripts/_train.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
source "$ROOT/scripts/_train.sh"

usage() { echo "usage: bash scripts/finetune-ea.sh PLAIN_CHECKPOINT PREP_DIR SAVE_DIR" >&2; exit 2; }
[ $# -eq 3 ] || usage
PLAIN=$1
PREP=$2
SAVE_DIR=$3
RAMP_UPDATES=${RAMP_UPDATES:-1000}
MAX_UPDATE=${MAX_UPDATE:-10000}
SEED=${SEED:-1}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-4000}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0001}
MAX_TOKENS=${MAX_TOKENS:-4096}
EA_ARGS=${EA_ARGS:-}
EXTRA_ARGS=${EXTRA_ARGS:-}
REF_GPUS=1
REF_MAX_TOKENS=$MAX_TOKENS

[ -f "$PLAIN" ] || { echo "error: plain checkpoint '$PLAIN' not found" >&2; exit 2; }
[ -d "$PREP/data-bin" ] || { echo "error: '$PREP/data-bin' not found (run scripts/prepare-*.sh first)" >&2; exit 2; }
[[ "$RAMP_UPDATES" =~ ^[0-9]+$ ]] || { echo "error: RAMP_UPDATES must be a non-negative integer, got '$RAMP_UPDATES'" >&2; exit 2; }

# the plain model's architecture, as EA-Transformer options (one per line)
MODEL_ARGS=()
while IFS= read -r line; do MODEL_ARGS+=("$line"); done < <(python -m evo_fairseq.warm_start "$PLAIN")
[ ${#MODEL_ARGS[@]} -gt 0 ] || { echo "error: could not read the architecture of '$PLAIN'" >&2; exit 2; }
echo "==> EA-Transformer from $PLAIN: ${MODEL_ARGS[*]}"
echo "==> alpha and beta ramp from 0 over $RAMP_UPDATES updates; $MAX_UPDATE updates in all"

# shellcheck disable=SC2086
launch_training "$PREP/data-bin" "${MODEL_ARGS[@]}" --ea-ramp-updates "$RAMP_UPDATES" $EA_ARGS \
  --restore-file "$PLAIN" --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 \
  --lr "$LR" --lr-scheduler inverse_sqrt --warmup-updates "$WARMUP" --weight-decay "$WEIGHT_DECAY" \
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --max-update "$MAX_UPDATE" --seed "$SEED" --save-dir "$SAVE_DIR" \
  --log-format simple --log-interval 100 $EXTRA_ARGS
