#!/usr/bin/env bash
# WMT'14 English-German or English-French with the processing of fairseq's
# examples/translation/prepare-wmt14en2{de,fr}.sh: the standard training corpora, Moses
# punctuation normalisation and tokenisation with dash splits; joint BPE with 40k merges;
# training pairs of 1-250 subwords with length ratio <= 1.5; fairseq-preprocess with a
# joined dictionary. Valid is newstest2013 and test newstest2014 (full), from their SGM files.
#
# Usage: bash scripts/prepare-wmt14.sh de|fr [OUT_DIR]      (default: work/wmt14_en_de or _fr)
#   (scripts/prepare-wmt14en2de.sh and prepare-wmt14en2fr.sh call this)
#   OFFLINE_DIR=DIR   take the archives from DIR instead of downloading them
#   BPE=subword_nmt|fastbpe  BPE_MERGES=40000  WORKERS=$(nproc)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

TGT=${1:-}
case "$TGT" in de|fr) ;; *) echo "usage: bash scripts/prepare-wmt14.sh de|fr [OUT_DIR] (got '$TGT')" >&2; exit 2 ;; esac
OUT=${2:-$ROOT/work/wmt14_en_$TGT}
OFFLINE_DIR=${OFFLINE_DIR:-}
BPE=${BPE:-subword_nmt}
BPE_MERGES=${BPE_MERGES:-40000}
WORKERS=${WORKERS:-$(nproc)}
DATASET=wmt14-en-$TGT

echo "==> archives of $DATASET in $OUT/orig"
python -m evo_fairseq.corpora download "$DATASET" --dir "$OUT/orig" ${OFFLINE_DIR:+--offline-dir "$OFFLINE_DIR"}
echo "==> raw text of each split in $OUT/raw"
python -m evo_fairseq.corpora extract "$DATASET" --dir "$OUT/orig" --out "$OUT/raw"
bash "$ROOT/scripts/prepare-pair.sh" --src en --tgt "$TGT" \
  --train "$OUT/raw/train" --valid "$OUT/raw/valid" --test "$OUT/raw/test" \
  --normalize-punctuation --clean 1,250,1.5 --clean-after bpe --joined-dictionary \
  --bpe "$BPE" --bpe-merges "$BPE_MERGES" --workers "$WORKERS" --out "$OUT"
