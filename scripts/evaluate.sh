#!/usr/bin/env bash
# Evaluate a trained model on the test set of data prepared by scripts/prepare-*.sh:
# average the last N epoch checkpoints, translate with fairseq-generate (beam 5 and the
# dataset's length penalty), then report tokenised BLEU (as in the papers), compound-split
# BLEU when the target is German, and detokenised sacreBLEU with its signature.
#
# Usage: bash scripts/evaluate.sh --prep DIR --checkpoints DIR [--average N | --checkpoint FILE]
#            [--beam 5] [--lenpen 1.0] [--batch-size 128] [--out DIR] [--cpu] [--fp16]
#
#   --prep DIR         output of scripts/prepare-*.sh (data-bin/, tok/, prepare.env)
#   --checkpoints DIR  fairseq-train's --save-dir
#   --average N        average the last N epoch checkpoints (default 5; 1 = the last one)
#   --checkpoint FILE  evaluate this checkpoint as it is instead
#   --out DIR          where translations and scores go (default: CHECKPOINTS/eval)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

PREP= CHECKPOINTS= CHECKPOINT= OUT=
AVERAGE=5
BEAM=5
LENPEN=1.0
BATCH_SIZE=128
DEVICE_ARGS=()

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "evaluate.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prep) PREP=$2; shift 2 ;;
    --checkpoints) CHECKPOINTS=$2; shift 2 ;;
    --checkpoint) CHECKPOINT=$2; shift 2 ;;
    --average) AVERAGE=$2; shift 2 ;;
    --beam) BEAM=$2; shift 2 ;;
    --lenpen) LENPEN=$2; shift 2 ;;
    --batch-size) BATCH_SIZE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --cpu|--fp16) DEVICE_ARGS+=("$1"); shift ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$PREP" ] || die "--prep is required (see --help)"
[ -f "$PREP/prepare.env" ] || die "$PREP/prepare.env is missing: is --prep the output of scripts/prepare-*.sh?"
[ -n "$CHECKPOINTS" ] || [ -n "$CHECKPOINT" ] || die "--checkpoints DIR or --checkpoint FILE is required"
[[ "$AVERAGE" =~ ^[1-9][0-9]*$ ]] || die "--average must be a positive integer, got '$AVERAGE'"
[[ "$BEAM" =~ ^[1-9][0-9]*$ ]] || die "--beam must be a positive integer, got '$BEAM'"
[[ "$LENPEN" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--lenpen must be a non-negative number, got '$LENPEN'"
# shellcheck disable=SC1091
source "$PREP/prepare.env"
OUT=${OUT:-${CHECKPOINTS:-$(dirname "$CHECKPOINT")}/eval}
mkdir -p "$OUT"

if [ -z "$CHECKPOINT" ]; then
  if [ "$AVERAGE" = 1 ]; then
    CHECKPOINT=$CHECKPOINTS/checkpoint_last.pt
  else
    echo "==> averaging the last $AVERAGE epoch checkpoints of $CHECKPOINTS"
    CHECKPOINT=$OUT/averaged.pt
    python -m evo_fairseq.average_checkpoints --inputs "$CHECKPOINTS" \
      --num-epoch-checkpoints "$AVERAGE" --output "$CHECKPOINT"
  fi
fi
[ -f "$CHECKPOINT" ] || die "no checkpoint $CHECKPOINT"

echo "==> translating the test set: beam $BEAM, length penalty $LENPEN"
# shellcheck disable=SC2086
fairseq-generate "$PREP/data-bin" --user-dir "$ROOT/evo_fairseq" -s "$SRC" -t "$TGT" \
  --path "$CHECKPOINT" --gen-subset test --beam "$BEAM" --lenpen "$LENPEN" \
  --batch-size "$BATCH_SIZE" --tokenizer moses $MOSES_ARGS --bpe "$BPE" --bpe-codes "$CODES" \
  "${DEVICE_ARGS[@]}" > "$OUT/generate.txt" 2> "$OUT/generate.log" \
  || { tail -20 "$OUT/generate.log" >&2; exit 1; }

echo "==> scores ($SRC-$TGT, test)"
SCORE_ARGS=()
[ "$TGT" = de ] && SCORE_ARGS+=(--compound-split)
[ -n "$LOWERCASE" ] && SCORE_ARGS+=(--lowercase)
python -m evo_fairseq.score --generate-output "$OUT/generate.txt" --tok-ref "$PREP/tok/test.$TGT" \
  --raw-ref "$RAW_TEST_REF" "${SCORE_ARGS[@]}" --out-dir "$OUT" | tee "$OUT/scores.txt"
