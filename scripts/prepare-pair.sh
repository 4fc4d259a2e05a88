#!/usr/bin/env bash
# Prepare any language pair from raw parallel text for fairseq:
# Moses tokenisation, joint BPE learned on the training data, fairseq-preprocess.
#
# Usage: bash scripts/prepare-pair.sh --src xx --tgt yy --train PREFIX --valid PREFIX
#            --test PREFIX --out DIR [--bpe subword_nmt|fastbpe] [--bpe-merges N]
#            [--lowercase] [--joined-dictionary] [--workers N]
#
# Each PREFIX names PREFIX.xx and PREFIX.yy (plain or .gz), one sentence per line.
# Writes DIR/tok/ (tokenised text), DIR/code (BPE codes; DIR/code.fastbpe too with
# --bpe fastbpe), DIR/bpe/ and DIR/data-bin/ (fairseq-preprocess output).
# A step whose output is already there is skipped; outputs are written atomically.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

SRC= TGT= TRAIN= VALID= TEST= OUT=
BPE=subword_nmt
BPE_MERGES=10000
LOWERCASE=
JOINED=
WORKERS=$(nproc)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "prepare-pair.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --src) SRC=$2; shift 2 ;;
    --tgt) TGT=$2; shift 2 ;;
    --train) TRAIN=$2; shift 2 ;;
    --valid) VALID=$2; shift 2 ;;
    --test) TEST=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --bpe) BPE=$2; shift 2 ;;
    --bpe-merges) BPE_MERGES=$2; shift 2 ;;
    --lowercase) LOWERCASE=--lowercase; shift ;;
    --joined-dictionary) JOINED=--joined-dictionary; shift ;;
    --workers) WORKERS=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for v in SRC TGT TRAIN VALID TEST OUT; do
  [ -n "${!v}" ] || die "--$(echo $v | tr 'A-Z' 'a-z') is required (see --help)"
done
case "$BPE" in subword_nmt|fastbpe) ;; *) die "--bpe must be subword_nmt or fastbpe, got '$BPE'" ;; esac
[[ "$BPE_MERGES" =~ ^[1-9][0-9]*$ ]] || die "--bpe-merges must be a positive integer, got '$BPE_MERGES'"
[[ "$WORKERS" =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer, got '$WORKERS'"
[ "$SRC" != "$TGT" ] || die "--src and --tgt must differ, both are '$SRC'"

# the file for PREFIX.lang: plain or gzipped
find_text() {
  if [ -f "$1.$2" ]; then echo "$1.$2"
  elif [ -f "$1.$2.gz" ]; then echo "$1.$2.gz"
  else die "missing input: neither $1.$2 nor $1.$2.gz exists"; fi
}

mkdir -p "$OUT/tok" "$OUT/bpe"
echo "==> tokenising (Moses, $WORKERS workers${LOWERCASE:+, lowercased})"
for lang in "$SRC" "$TGT"; do
  files=()
  for split in train valid test; do
    prefix=$(eval echo "\$$(echo $split | tr 'a-z' 'A-Z')")
    input=$(find_text "$prefix" "$lang")
    [ -s "$OUT/tok/$split.$lang" ] || files+=("$input" "$OUT/tok/$split.$lang")
  done
  [ ${#files[@]} -eq 0 ] || python -m evo_fairseq.text tokenize --lang "$lang" $LOWERCASE \
    --workers "$WORKERS" "${files[@]}"
done
for split in train valid test; do
  n_src=$(wc -l < "$OUT/tok/$split.$SRC"); n_tgt=$(wc -l < "$OUT/tok/$split.$TGT")
  [ "$n_src" = "$n_tgt" ] || die "$split: $n_src $SRC lines but $n_tgt $TGT lines"
done

CODES="$OUT/code"
if [ ! -s "$CODES" ]; then
  echo "==> learning joint BPE ($BPE_MERGES merges) on train.$SRC + train.$TGT"
  cat "$OUT/tok/train.$SRC" "$OUT/tok/train.$TGT" \
    | subword-nmt learn-bpe -s "$BPE_MERGES" > "$CODES.tmp"
  mv "$CODES.tmp" "$CODES"
fi
if [ "$BPE" = fastbpe ] && [ ! -s "$CODES.fastbpe" ]; then
  python -m evo_fairseq.text fastbpe-codes "$CODES" "$CODES.fastbpe"
fi

echo "==> applying BPE ($BPE)"
for split in train valid test; do
  for lang in "$SRC" "$TGT"; do
    out="$OUT/bpe/$split.$lang"
    [ -s "$out" ] && continue
    if [ "$BPE" = fastbpe ]; then
      python -m evo_fairseq.text apply-fastbpe --codes "$CODES.fastbpe" "$OUT/tok/$split.$lang" "$out"
    else
      subword-nmt apply-bpe -c "$CODES" --num-workers "$WORKERS" < "$OUT/tok/$split.$lang" > "$out.tmp"
      mv "$out.tmp" "$out"
    fi
  done
done

if [ ! -s "$OUT/data-bin/dict.$TGT.txt" ] || [ ! -s "$OUT/data-bin/test.$SRC-$TGT.$TGT.bin" ]; then
  echo "==> fairseq-preprocess"
  rm -rf "$OUT/data-bin.tmp"
  fairseq-preprocess --source-lang "$SRC" --target-lang "$TGT" \
    --trainpref "$OUT/bpe/train" --validpref "$OUT/bpe/valid" --testpref "$OUT/bpe/test" \
    --destdir "$OUT/data-bin.tmp" --workers "$WORKERS" $JOINED 2>&1 | grep -v tensorboardX
  rm -rf "$OUT/data-bin"
  mv "$OUT/data-bin.tmp" "$OUT/data-bin"
fi
[ "$BPE" = fastbpe ] && CODES="$CODES.fastbpe"
echo "==> prepared: $OUT/data-bin (BPE codes for --bpe $BPE: $CODES)"
