#!/usr/bin/env bash
# Quality benchmark on the bundled Multi30k De-En, in two steps:
#   sweep    six settings of --ea-alpha/--ea-beta/--ea-kernel-size, EA only, scored on the
#            validation set (detokenised sacreBLEU on val, then validation loss)
#   quality  fairseq's transformer against ea_transformer at the same number of updates,
#            one harness run per seed, BLEU on test2016
#   converge fairseq's transformer against ea_transformer near convergence: the main job's
#            model with dropout 0.3, 8192 tokens per batch, CONVERGE_UPDATES (3000) updates,
#            checkpoint_best.pt by validation loss, BLEU on test2016, every seed, JOBS trainings
#            at once (default 4 on a GPU, 1 on CPU); report, JSON and validation-curve figure
#   speed    training throughput, peak memory and fixed-length beam-5 generation of both models
#            by model size (SPEED_SIZES) and sentence length (SPEED_JOIN: 1 = Multi30k lines,
#            6 = six lines joined, ~90 tokens), REPEATS plain/EA pairs interleaved, each
#            measurement a fresh process (python -m evo_fairseq.benchmark speed); table, JSON and
#            a chart of the EA/plain ratios
#   warmstart  a plain transformer trained P updates, fine-tuned K more as (a) plain, (b) EA
#            without a ramp, (c) EA with an alpha/beta ramp (scripts/finetune-ea.sh), against
#            (d) EA from scratch for P + K updates; validation loss every 100 updates and
#            BLEU on test2016 (two trainings at a time, one thread each)
#   gpu      the GPU acceptance run in MINUTES (default 8), as much as fits, in this order:
#            the self-check on CUDA, the gpu-marked tests, fairseq-train --fp16/--bf16/--amp
#            smoke runs with fairseq-generate, the converge protocol, speed rows (wmt_en_de at
#            6 joined lines first); the data is prepared meanwhile. One report directory:
#            WORK_DIR/benchmark/gpu/report.md (python -m evo_fairseq.benchmark acceptance)
#   prepare  only the data (prep/ and the raw references)
# Both use the main job's model and optimiser (examples/multi30k/run.sh) through
# python -m evo_fairseq.benchmark; each run writes its own benchmark.json/.md.
#
# Usage: bash examples/multi30k/benchmark.sh {sweep|quality|all|converge|speed|warmstart|prepare} [WORK_DIR]
#        bash examples/multi30k/benchmark.sh gpu [MINUTES [WORK_DIR]]
#                                                          (default WORK_DIR: work/multi30k)
#   SWEEP_UPDATES=200 QUALITY_UPDATES=300 SEEDS="1 2 3" EA_ARGS="--ea-alpha 0.8"
#   ("all" runs the sweep, then the quality runs with the sweep's best setting)
#   CONVERGE_UPDATES=3000 SEEDS="1 2 3" JOBS=4                          (converge)
#   SPEED_SIZES="main iwslt_de_en wmt_en_de vaswani_wmt_en_de_big" (GPU; CPU: "main iwslt_de_en")
#   SPEED_JOIN="1 6" REPEATS=4                                          (speed)
#   PLAIN_UPDATES=600 FINETUNE_UPDATES=300 RAMP_UPDATES=150 SEED=1   (warmstart)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/_env.sh"

usage() {
  echo "usage: bash examples/multi30k/benchmark.sh {sweep|quality|all|converge|speed|warmstart|prepare} [WORK_DIR]" >&2
  echo "       bash examples/multi30k/benchmark.sh gpu [MINUTES [WORK_DIR]]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
STEP=$1
STARTED_AT=$(date +%s)
MINUTES=8
if [ "$STEP" = gpu ]; then
  MINUTES=${2:-8}
  [[ "$MINUTES" =~ ^[0-9]+([.][0-9]+)?$ ]] || {
    echo "error: MINUTES must be a positive number, got '$MINUTES'" >&2; usage; }
  shift || true
fi
WORK=$(mkdir -p "${2:-$ROOT/work/multi30k}" && cd "${2:-$ROOT/work/multi30k}" && pwd)
SWEEP_UPDATES=${SWEEP_UPDATES:-200}
QUALITY_UPDATES=${QUALITY_UPDATES:-300}
SEEDS=${SEEDS:-1 2 3}
EA_ARGS=${EA_ARGS:-}
CONVERGE_UPDATES=${CONVERGE_UPDATES:-3000}
JOBS=${JOBS:-}
PLAIN_UPDATES=${PLAIN_UPDATES:-600}
FINETUNE_UPDATES=${FINETUNE_UPDATES:-300}
RAMP_UPDATES=${RAMP_UPDATES:-150}
SEED=${SEED:-1}
SPEED_SIZES=${SPEED_SIZES:-}
SPEED_JOIN=${SPEED_JOIN:-1 6}
REPEATS=${REPEATS:-4}
SWEEP_SETTINGS=("0.5 0.5 3" "0.5 0.1 3" "0.2 0.5 3" "0.8 0.5 3" "0.5 0.9 3" "0.5 0.5 5")
DATA=$ROOT/examples/multi30k/data
PREP=$WORK/prep
BENCH=$WORK/benchmark
MODEL_ARGS="--encoder-layers 3 --decoder-layers 3 --encoder-embed-dim 256 --decoder-embed-dim 256
  --encoder-ffn-embed-dim 512 --decoder-ffn-embed-dim 512 --encoder-attention-heads 4
  --decoder-attention-heads 4 --encoder-normalize-before --decoder-normalize-before --share-all-embeddings"
TRAIN_ARGS="--optimizer adam --adam-betas (0.9,0.98) --clip-norm 0.0 --lr 2e-3 --lr-scheduler inverse_sqrt
  --warmup-updates 100 --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1
  --max-tokens 4096"

case "$STEP" in sweep|quality|all|converge|speed|warmstart|gpu|prepare) ;; *)
  echo "error: unknown step '$STEP' (allowed: sweep, quality, all, converge, speed, warmstart, gpu, prepare)" >&2; usage ;;
esac
CONVERGE_TRAIN="--optimizer adam --adam-betas (0.9,0.98) --clip-norm 0.0 --lr 2e-3
  --lr-scheduler inverse_sqrt --warmup-updates 100 --dropout 0.3
  --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 8192"
converge_args() {  # the convergence protocol's harness options
  echo "--arch iwslt_de_en --model-args '$MODEL_ARGS' --train-args '$CONVERGE_TRAIN'" \
    "--gen-batch-size 128 --bpe-codes $PREP/code --seeds $SEEDS --max-update $CONVERGE_UPDATES" \
    "--ea-args '$EA_ARGS' --checkpoint best --jobs $JOBS" \
    "--timing-warmup $(( CONVERGE_UPDATES > 400 ? 100 : CONVERGE_UPDATES / 4 ))" \
    "--reference $BENCH/test.en"
}

prepare() {
  echo "==> preparing Multi30k De-En"
  bash "$ROOT/scripts/prepare-pair.sh" --src de --tgt en \
    --train "$DATA/train" --valid "$DATA/val" --test "$DATA/test_2016_flickr" \
    --bpe subword_nmt --bpe-merges 4000 --joined-dictionary --out "$PREP"
  mkdir -p "$BENCH/sweep" "$BENCH/quality"
  gunzip -c "$DATA/val.en.gz" > "$BENCH/val.en"
  gunzip -c "$DATA/test_2016_flickr.en.gz" > "$BENCH/test.en"
}

if [ "$STEP" = prepare ]; then
  prepare
  exit 0
fi

if [ "$STEP" = gpu ]; then
  out=$BENCH/gpu
  mkdir -p "$out"
  JOBS=${JOBS:-6}
  echo "==> GPU acceptance run, $MINUTES min budget; report in $out"
  python -m evo_fairseq.benchmark acceptance --data-bin "$PREP/data-bin" --out-dir "$out" \
    --minutes "$MINUTES" --started-at "$STARTED_AT" \
    --prepare "bash '$ROOT/examples/multi30k/benchmark.sh' prepare '$WORK'" \
    --converge-args "$(converge_args)" --speed-args "--repeats ${REPEATS_GPU:-2}"
  exit $?
fi

prepare

harness() {
  # shellcheck disable=SC2086
  python -m evo_fairseq.benchmark --data-bin "$PREP/data-bin" --arch iwslt_de_en \
    --model-args "$MODEL_ARGS" --train-args "$TRAIN_ARGS" --gen-batch-size 128 \
    --bpe-codes "$PREP/code" "$@"
}

if [ "$STEP" = converge ]; then
  if [ -z "$JOBS" ]; then
    JOBS=$(python -c "import torch; print(4 if torch.cuda.is_available() else 1)")
  fi
  out=$BENCH/converge
  echo "==> converge: $CONVERGE_UPDATES updates, seeds $SEEDS, $JOBS at once, checkpoint_best.pt"
  eval "python -m evo_fairseq.benchmark compare --data-bin '$PREP/data-bin' $(converge_args)" \
    --figure "$out.png" --out-dir "$out" > "$out.log" 2>&1 \
    || { tail -20 "$out.log" >&2; exit 1; }
  cat "$out/benchmark.md"
  echo "figure: $out.png"
  exit 0
fi

if [ "$STEP" = speed ]; then
  if [ -z "$SPEED_SIZES" ]; then
    SPEED_SIZES=$(python -c "import torch; print('main iwslt_de_en wmt_en_de vaswani_wmt_en_de_big'
      if torch.cuda.is_available() else 'main iwslt_de_en')")
  fi
  out=$BENCH/speed/$(echo "$SPEED_SIZES join $SPEED_JOIN" | tr ' ' '-')
  mkdir -p "$out"
  echo "==> speed: sizes $SPEED_SIZES, lines joined $SPEED_JOIN, $REPEATS pairs each"
  # shellcheck disable=SC2086
  python -m evo_fairseq.benchmark speed --data-bin "$PREP/data-bin" --sizes $SPEED_SIZES \
    --join-lines $SPEED_JOIN --repeats "$REPEATS" --figure "$out/speed.png" --out-dir "$out" \
    > "$out/run.log" 2>&1 || { tail -20 "$out/run.log" >&2; exit 1; }
  cat "$out/speed.md"
  echo "figure: $out/speed.png"
  exit 0
fi

if [ "$STEP" = warmstart ]; then
  out=$BENCH/warmstart/seed$SEED
  mkdir -p "$out"
  rm -f "$out/failed"
  # shellcheck disable=SC2086
  train() {  # NAME ARCH UPDATES [more fairseq-train options]
    local name=$1 arch=$2 updates=$3; shift 3
    [ -f "$out/$name.done" ] && return  # an unfinished run resumes from its checkpoint_last.pt
    OMP_NUM_THREADS=1 fairseq-train "$PREP/data-bin" --user-dir "$ROOT/evo_fairseq" --cpu \
      --arch "$arch" $MODEL_ARGS $TRAIN_ARGS --max-update "$updates" --seed "$SEED" \
      --validate-interval-updates 100 --no-epoch-checkpoints --save-dir "$out/$name" \
      --log-format simple --log-interval 100 "$@" >> "$out/$name.log" 2>&1 \
      || { tail -20 "$out/$name.log" >&2; touch "$out/failed"; exit 1; }
    touch "$out/$name.done"
  }
  finetune() {  # NAME RAMP_UPDATES [EA options]
    local name=$1 ramp=$2; shift 2
    [ -f "$out/$name.done" ] && return
    rm -rf "$out/$name"  # a fine-tune restarts from the plain checkpoint
    OMP_NUM_THREADS=1 NGPU=0 RAMP_UPDATES=$ramp MAX_UPDATE=$FINETUNE_UPDATES SEED=$SEED \
      LR=2e-3 WARMUP=100 WEIGHT_DECAY=0 MAX_TOKENS=4096 EA_ARGS="$*" \
      EXTRA_ARGS="--validate-interval-updates 100 --no-epoch-checkpoints" \
      bash "$ROOT/scripts/finetune-ea.sh" "$out/plain/checkpoint_last.pt" "$PREP" "$out/$name" \
      > "$out/$name.log" 2>&1 || { tail -20 "$out/$name.log" >&2; touch "$out/failed"; exit 1; }
    touch "$out/$name.done"
  }
  echo "==> warm start (seed $SEED): plain $PLAIN_UPDATES updates, then $FINETUNE_UPDATES more as" \
    "plain / EA / EA with a $RAMP_UPDATES-update ramp; EA from scratch $((PLAIN_UPDATES + FINETUNE_UPDATES))"
  ( train plain transformer "$PLAIN_UPDATES"
    finetune finetune-plain 0 --ea-stacks none
    finetune finetune-ea-ramp "$RAMP_UPDATES" ) &
  lane_a=$!
  ( train scratch-ea ea_transformer "$((PLAIN_UPDATES + FINETUNE_UPDATES))"
    while [ ! -f "$out/plain.done" ]; do [ -f "$out/failed" ] && exit 1; sleep 10; done
    finetune finetune-ea 0 ) &
  lane_b=$!
  wait "$lane_a" && wait "$lane_b"
  for name in plain finetune-plain finetune-ea finetune-ea-ramp scratch-ea; do
    [ -s "$out/$name.hyp" ] || {
      fairseq-generate "$PREP/data-bin" --user-dir "$ROOT/evo_fairseq" -s de -t en \
        --path "$out/$name/checkpoint_last.pt" --gen-subset test --beam 5 --batch-size 128 \
        --tokenizer moses --moses-no-escape --bpe subword_nmt --bpe-codes "$PREP/code" \
        2> "$out/$name.generate.log" | grep '^D-' | sed 's/^D-//' | sort -n -k1,1 | cut -f3 \
        > "$out/$name.hyp"
    }
  done
  python -m evo_fairseq.benchmark warmstart "$out" --reference "$BENCH/test.en" \
    --plain-updates "$PLAIN_UPDATES" --ramp-updates "$RAMP_UPDATES" --figure "$out/warmstart.png" \
    | tee "$out/warmstart.md"
  exit 0
fi

if [ "$STEP" != quality ]; then
  for setting in "${SWEEP_SETTINGS[@]}"; do
    read -r alpha beta kernel <<< "$setting"
    out=$BENCH/sweep/a$alpha-b$beta-k$kernel
    echo "==> sweep: alpha $alpha, beta $beta, kernel $kernel ($SWEEP_UPDATES updates, scored on valid)"
    harness --sides ea --seeds 1 --max-update "$SWEEP_UPDATES" \
      --ea-args "--ea-alpha $alpha --ea-beta $beta --ea-kernel-size $kernel" \
      --gen-subset valid --reference "$BENCH/val.en" --out-dir "$out" > "$out.log" 2>&1 \
      || { tail -20 "$out.log" >&2; exit 1; }
  done
  python -m evo_fairseq.benchmark sweep "$BENCH/sweep" | tee "$BENCH/sweep.md"
  EA_ARGS=$(python -m evo_fairseq.benchmark sweep --best "$BENCH/sweep")
fi

if [ "$STEP" != sweep ]; then
  for seed in $SEEDS; do
    out=$BENCH/quality/seed$seed
    echo "==> quality: seed $seed, $QUALITY_UPDATES updates, EA options: ${EA_ARGS:-defaults}"
    harness --seeds "$seed" --max-update "$QUALITY_UPDATES" --ea-args "$EA_ARGS" \
      --reference "$BENCH/test.en" --out-dir "$out" > "$out.log" 2>&1 \
      || { tail -20 "$out.log" >&2; exit 1; }
    grep -E "^\| (BLEU|validation loss)" "$out/benchmark.md"
  done
fi
