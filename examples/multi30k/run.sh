#!/usr/bin/env bash
# Main job: train a small EA-Transformer on the bundled Multi30k De-En (CPU is
# enough), translate test2016 with beam 5 and print detokenised sacreBLEU.
#
# Usage: bash examples/multi30k/run.sh [WORK_DIR]        (default: work/multi30k)
#   ARCH=transformer bash examples/multi30k/run.sh       fairseq's transformer, same settings
#   MAX_UPDATE=400 MAX_HOURS=0.15 SEED=1 EA_ARGS="--ea-alpha 0.8"
#                                                        other knobs; training stops at
#                                                        MAX_UPDATE or after MAX_HOURS
#   GEN_ARGS="--lenpen 1.2"                              more fairseq-generate options
#   DATA=DIR                                             another corpus laid out like
#                                                        examples/multi30k/data (train, val,
#                                                        test_2016_flickr; .de.gz and .en.gz)
#
# Steps: Moses tokenisation, joint BPE, fairseq-preprocess (scripts/prepare-pair.sh);
# fairseq-train; fairseq-generate on test2016; sacreBLEU against the raw references.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/_env.sh"

WORK=${1:-$ROOT/work/multi30k}
ARCH=${ARCH:-ea_transformer}
MAX_UPDATE=${MAX_UPDATE:-400}
MAX_HOURS=${MAX_HOURS:-0.15}
SEED=${SEED:-1}
EA_ARGS=${EA_ARGS:-}
GEN_ARGS=${GEN_ARGS:-}
BPE_MERGES=4000
DATA=${DATA:-$ROOT/examples/multi30k/data}
PREP=$WORK/prep
SAVE=$WORK/checkpoints/$ARCH-seed$SEED
RESULTS=$WORK/results/$ARCH-seed$SEED
# a small pre-norm transformer: 3+3 layers, 256 dims, 4 heads, shared embeddings
MODEL_ARGS=(
  --encoder-layers 3 --decoder-layers 3
  --encoder-embed-dim 256 --decoder-embed-dim 256
  --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512
  --encoder-attention-heads 4 --decoder-attention-heads 4
  --encoder-normalize-before --decoder-normalize-before --share-all-embeddings
)

echo "==> [1/4] preparing Multi30k De-En"
bash "$ROOT/scripts/prepare-pair.sh" --src de --tgt en \
  --train "$DATA/train" --valid "$DATA/val" --test "$DATA/test_2016_flickr" \
  --bpe subword_nmt --bpe-merges "$BPE_MERGES" --joined-dictionary --out "$PREP"

echo "==> [2/4] training $ARCH: $MAX_UPDATE updates or $MAX_HOURS hours, whichever comes first (seed $SEED)"
mkdir -p "$SAVE" "$RESULTS"
# shellcheck disable=SC2086
fairseq-train "$PREP/data-bin" --user-dir "$ROOT/evo_fairseq" --arch "$ARCH" "${MODEL_ARGS[@]}" $EA_ARGS \
  --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 \
  --lr 2e-3 --lr-scheduler inverse_sqrt --warmup-updates 100 \
  --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
  --max-tokens 4096 --max-update "$MAX_UPDATE" --stop-time-hours "$MAX_HOURS" --seed "$SEED" \
  --save-dir "$SAVE" --no-epoch-checkpoints --log-format simple --log-interval 25 \
  2>&1 | grep --line-buffered -v tensorboardX | tee "$RESULTS/train.log"

echo "==> [3/4] translating test2016 (beam 5)"
# shellcheck disable=SC2086
fairseq-generate "$PREP/data-bin" --user-dir "$ROOT/evo_fairseq" -s de -t en $GEN_ARGS \
  --path "$SAVE/checkpoint_last.pt" --gen-subset test --beam 5 --batch-size 128 \
  --tokenizer moses --moses-no-escape --bpe subword_nmt --bpe-codes "$PREP/code" \
  > "$RESULTS/generate.txt" 2> "$RESULTS/generate.log"
grep '^D-' "$RESULTS/generate.txt" | sed 's/^D-//' | sort -n -k1,1 | cut -f3 > "$RESULTS/hyp.en"
gunzip -c "$DATA/test_2016_flickr.en.gz" > "$RESULTS/ref.en"
n_hyp=$(wc -l < "$RESULTS/hyp.en"); n_ref=$(wc -l < "$RESULTS/ref.en")
[ "$n_hyp" = "$n_ref" ] || { echo "error: $n_hyp translations for $n_ref sentences" >&2; exit 1; }

echo "==> [4/4] detokenised sacreBLEU on test2016 ($n_hyp sentences)"
sacrebleu "$RESULTS/ref.en" -i "$RESULTS/hyp.en" -m bleu -f text | tee "$RESULTS/bleu.txt"
echo "translations: $RESULTS/hyp.en  checkpoint: $SAVE/checkpoint_last.pt"
