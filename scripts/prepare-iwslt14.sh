#!/usr/bin/env bash
# IWSLT'14 German-English as fairseq's examples/translation/prepare-iwslt14.sh makes it:
# train.tags without talk metadata, Moses tokenisation (no dash splits), training pairs
# of 1-175 tokens with length ratio <= 1.5, lowercased; valid = every 23rd training
# pair; test = dev2010 + TEDX dev2012 + tst2010-2012; joint BPE with 10k merges;
# fairseq-preprocess (separate dictionaries).
#
# Usage: bash scripts/prepare-iwslt14.sh [OUT_DIR]      (default: work/iwslt14.tokenized.de-en)
#   OFFLINE_DIR=DIR   take de-en.tgz from DIR instead of downloading it
#   BPE=subword_nmt|fastbpe  BPE_MERGES=10000  WORKERS=$(nproc)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

OUT=${1:-$ROOT/work/iwslt14.tokenized.de-en}
OFFLINE_DIR=${OFFLINE_DIR:-}
BPE=${BPE:-subword_nmt}
BPE_MERGES=${BPE_MERGES:-10000}
WORKERS=${WORKERS:-$(nproc)}
DATASET=iwslt14-de-en

echo "==> archives of $DATASET in $OUT/orig"
python -m evo_fairseq.corpora download "$DATASET" --dir "$OUT/orig" ${OFFLINE_DIR:+--offline-dir "$OFFLINE_DIR"}
echo "==> raw text of each split in $OUT/raw"
python -m evo_fairseq.corpora extract "$DATASET" --dir "$OUT/orig" --out "$OUT/raw"
bash "$ROOT/scripts/prepare-pair.sh" --src de --tgt en \
  --train "$OUT/raw/train" --valid-every 23 --test "$OUT/raw/test" \
  --lowercase --no-dash-splits --clean 1,175,1.5 \
  --bpe "$BPE" --bpe-merges "$BPE_MERGES" --workers "$WORKERS" --out "$OUT"
