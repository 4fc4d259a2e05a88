#!/usr/bin/env bash
# Prepare any language pair from raw parallel text for fairseq:
# Moses tokenisation, cleaning, joint BPE learned on the training data, fairseq-preprocess.
#
# Usage: bash scripts/prepare-pair.sh --src xx --tgt yy --train PREFIX
#            (--valid PREFIX | --valid-every N) --test PREFIX --out DIR
#            [--bpe subword_nmt|fastbpe] [--bpe-merges N] [--lowercase] [--joined-dictionary]
#            [--clean MIN,MAX,RATIO] [--clean-after tok|bpe] [--no-dash-splits]
#            [--normalize-punctuation] [--workers N]
#
# Each PREFIX names PREFIX.xx and PREFIX.yy (plain or .gz), one sentence per line.
# --valid-every N: valid is every Nth line of the (cleaned) training data, taken out of it.
# --clean: keep training pairs of MIN..MAX tokens with a length ratio <= RATIO, counted
#   after tokenising (default) or after BPE (--clean-after bpe).
# Writes DIR/tok/ (tokenised text; tok/test.yy is the reference of tokenised BLEU),
# DIR/code (BPE codes; DIR/code.fastbpe too with --bpe fastbpe), DIR/bpe/, DIR/data-bin/
# (fairseq-preprocess output) and DIR/prepare.env (settings for scripts/evaluate.sh).
# A step whose output is already there is skipped; outputs are written atomically.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"

SRC= TGT= TRAIN= VALID= VALID_EVERY= TEST= OUT=
BPE=subword_nmt
BPE_MERGES=10000
LOWERCASE=
JOINED=
CLEAN=
CLEAN_AFTER=tok
NO_DASH_SPLITS=
NORMALIZE=
WORKERS=$(nproc)

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
die() { echo "prepare-pair.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --src) SRC=$2; shift 2 ;;
    --tgt) TGT=$2; shift 2 ;;
    --train) TRAIN=$2; shift 2 ;;
    --valid) VALID=$2; shift 2 ;;
    --valid-every) VALID_EVERY=$2; shift 2 ;;
    --test) TEST=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --bpe) BPE=$2; shift 2 ;;
    --bpe-merges) BPE_MERGES=$2; shift 2 ;;
    --lowercase) LOWERCASE=--lowercase; shift ;;
    --joined-dictionary) JOINED=--joined-dictionary; shift ;;
    --clean) CLEAN=$2; shift 2 ;;
    --clean-after) CLEAN_AFTER=$2; shift 2 ;;
    --no-dash-splits) NO_DASH_SPLITS=--no-dash-splits; shift ;;
    --normalize-punctuation) NORMALIZE=--normalize-punctuation; shift ;;
    --workers) WORKERS=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
for v in SRC TGT TRAIN TEST OUT; do
  [ -n "${!v}" ] || die "--$(echo $v | tr 'A-Z' 'a-z') is required (see --help)"
done
if [ -n "$VALID" ] && [ -n "$VALID_EVERY" ]; then die "give --valid or --valid-every, not both"; fi
[ -n "$VALID" ] || [ -n "$VALID_EVERY" ] || die "--valid PREFIX or --valid-every N is required (see --help)"
[ -z "$VALID_EVERY" ] || [[ "$VALID_EVERY" =~ ^([2-9]|[1-9][0-9]+)$ ]] \
  || die "--valid-every must be an integer >= 2, got '$VALID_EVERY'"
if [ -n "$CLEAN" ]; then
  [[ "$CLEAN" =~ ^([0-9]+),([0-9]+),([0-9]+(\.[0-9]+)?)$ ]] \
    || die "--clean must be MIN,MAX,RATIO (e.g. 1,175,1.5), got '$CLEAN'"
  CLEAN_MIN=${BASH_REMATCH[1]} CLEAN_MAX=${BASH_REMATCH[2]} CLEAN_RATIO=${BASH_REMATCH[3]}
  [ "$CLEAN_MIN" -le "$CLEAN_MAX" ] || die "--clean: MIN ($CLEAN_MIN) must not exceed MAX ($CLEAN_MAX)"
fi
case "$CLEAN_AFTER" in tok|bpe) ;; *) die "--clean-after must be tok or bpe, got '$CLEAN_AFTER'" ;; esac
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

# clean_train IN_PREFIX OUT_PREFIX UNIT: the --clean length and ratio filter of a training pair
clean_train() {
  echo "==> cleaning training data: $CLEAN_MIN-$CLEAN_MAX $3, length ratio <= $CLEAN_RATIO"
  python -m evo_fairseq.text clean --src "$SRC" --tgt "$TGT" --min-len "$CLEAN_MIN" \
    --max-len "$CLEAN_MAX" --ratio "$CLEAN_RATIO" "$1" "$2"
}

SPLITS=(train test); [ -n "$VALID" ] && SPLITS=(train valid test)
# the training text before cleaning and the valid split, when either changes it
TRAIN_TOK=train
if { [ -n "$CLEAN" ] && [ "$CLEAN_AFTER" = tok ]; } || [ -n "$VALID_EVERY" ]; then TRAIN_TOK=train.full; fi

PREFIXES=("$TRAIN" "$TEST"); [ -n "$VALID" ] && PREFIXES+=("$VALID")
if [ ! -s "$OUT/data-bin/dict.$TGT.txt" ]; then
  echo "==> checking inputs (both sides exist, decode as UTF-8, same number of lines)"
  python -m evo_fairseq.text check --src "$SRC" --tgt "$TGT" "${PREFIXES[@]}" || exit 2
fi

mkdir -p "$OUT/tok" "$OUT/bpe"
echo "==> tokenising (Moses, $WORKERS workers${LOWERCASE:+, lowercased}${NO_DASH_SPLITS:+, no dash splits}${NORMALIZE:+, punctuation normalised})"
for lang in "$SRC" "$TGT"; do
  files=()
  for split in "${SPLITS[@]}"; do
    prefix=$(eval echo "\$$(echo $split | tr 'a-z' 'A-Z')")
    input=$(find_text "$prefix" "$lang")
    out=$split; [ "$split" = train ] && out=$TRAIN_TOK
    [ -s "$OUT/tok/train.$lang" ] && [ "$split" = train ] && continue
    [ -s "$OUT/tok/$out.$lang" ] || files+=("$input" "$OUT/tok/$out.$lang")
  done
  [ ${#files[@]} -eq 0 ] || python -m evo_fairseq.text tokenize --lang "$lang" $LOWERCASE \
    $NO_DASH_SPLITS $NORMALIZE --workers "$WORKERS" "${files[@]}"
done

if [ "$TRAIN_TOK" != train ] && { [ ! -s "$OUT/tok/train.$SRC" ] || [ ! -s "$OUT/tok/train.$TGT" ]; }; then
  source=$OUT/tok/train.full
  if [ -n "$CLEAN" ] && [ "$CLEAN_AFTER" = tok ]; then
    clean_train "$source" "$OUT/tok/train.clean" tokens
    source=$OUT/tok/train.clean
  fi
  for lang in "$SRC" "$TGT"; do
    if [ -n "$VALID_EVERY" ]; then
      awk -v n="$VALID_EVERY" 'NR % n == 0' "$source.$lang" > "$OUT/tok/valid.$lang.tmp"
      awk -v n="$VALID_EVERY" 'NR % n != 0' "$source.$lang" > "$OUT/tok/train.$lang.tmp"
      mv "$OUT/tok/valid.$lang.tmp" "$OUT/tok/valid.$lang"
    else
      cp "$source.$lang" "$OUT/tok/train.$lang.tmp"
    fi
    mv "$OUT/tok/train.$lang.tmp" "$OUT/tok/train.$lang"
  done
  [ -z "$VALID_EVERY" ] || echo "==> valid: every ${VALID_EVERY}th training pair ($(wc -l < "$OUT/tok/valid.$SRC") pairs)"
fi
for split in train valid test; do
  n_src=$(wc -l < "$OUT/tok/$split.$SRC"); n_tgt=$(wc -l < "$OUT/tok/$split.$TGT")
  [ "$n_src" = "$n_tgt" ] || die "$split: $n_src $SRC lines but $n_tgt $TGT lines"
  [ "$n_src" -gt 0 ] || die "$split is empty after tokenising${CLEAN:+ and cleaning}"
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
TRAIN_BPE=train
[ -n "$CLEAN" ] && [ "$CLEAN_AFTER" = bpe ] && TRAIN_BPE=train.full
for split in train valid test; do
  for lang in "$SRC" "$TGT"; do
    out="$OUT/bpe/$split.$lang"
    [ -s "$out" ] && continue
    [ "$split" = train ] && out="$OUT/bpe/$TRAIN_BPE.$lang"
    [ -s "$out" ] && continue
    if [ "$BPE" = fastbpe ]; then
      python -m evo_fairseq.text apply-fastbpe --codes "$CODES.fastbpe" "$OUT/tok/$split.$lang" "$out"
    else
      subword-nmt apply-bpe -c "$CODES" --num-workers "$WORKERS" < "$OUT/tok/$split.$lang" > "$out.tmp"
      mv "$out.tmp" "$out"
    fi
  done
done

if [ "$TRAIN_BPE" != train ] && { [ ! -s "$OUT/bpe/train.$SRC" ] || [ ! -s "$OUT/bpe/train.$TGT" ]; }; then
  clean_train "$OUT/bpe/train.full" "$OUT/bpe/train.clean" subwords
  for lang in "$SRC" "$TGT"; do mv "$OUT/bpe/train.clean.$lang" "$OUT/bpe/train.$lang"; done
fi

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

# what scripts/evaluate.sh needs to score this data: the raw test reference,
# and the options that make fairseq's moses tokenizer match the training data
abs_path() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
{
  printf 'SRC=%q\nTGT=%q\nBPE=%q\nCODES=%q\nLOWERCASE=%q\n' "$SRC" "$TGT" "$BPE" \
    "$(abs_path "$CODES")" "${LOWERCASE:+1}"
  printf 'MOSES_ARGS=%q\n' "--moses-no-escape${NO_DASH_SPLITS:+ --moses-no-dash-splits}"
  printf 'RAW_TEST_REF=%q\n' "$(abs_path "$(find_text "$TEST" "$TGT")")"
} > "$OUT/prepare.env.tmp"
mv "$OUT/prepare.env.tmp" "$OUT/prepare.env"
echo "==> prepared: $OUT/data-bin (BPE codes for --bpe $BPE: $CODES)"
