# Sourced by the training recipes: launch_training runs fairseq-train on every visible GPU
# (fairseq spawns one process per GPU; with NNODES > 1 torchrun starts them), with fp16 on
# GPU, and computes --max-tokens and --update-freq so that the tokens per update equal the
# published setting's REF_GPUS x REF_MAX_TOKENS.
#
# Inputs: REF_GPUS, REF_MAX_TOKENS, and the environment:
#   NGPU (default: the visible GPUs; 0 = CPU)  FP16=1  DRY_RUN=1 (print the command only)
#   NNODES=1 NODE_RANK=0 MASTER_ADDR MASTER_PORT=29500   (multi-node, through torchrun)

launch_training() {
  local gpus nodes workers total max_tokens update_freq
  gpus=${NGPU:-}
  [ -n "$gpus" ] || gpus=$(python -c "import torch; print(torch.cuda.device_count())")
  nodes=${NNODES:-1}
  [[ "$gpus" =~ ^[0-9]+$ ]] || { echo "NGPU must be a non-negative integer, got '$gpus'" >&2; exit 2; }
  [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || { echo "NNODES must be a positive integer, got '$nodes'" >&2; exit 2; }
  if [ "$nodes" -gt 1 ] && [ "$gpus" -eq 0 ]; then echo "NNODES=$nodes needs GPUs" >&2; exit 2; fi
  workers=$(( gpus > 0 ? gpus * nodes : 1 ))
  total=$(( REF_GPUS * REF_MAX_TOKENS ))
  if [ "$workers" -ge "$REF_GPUS" ]; then
    max_tokens=$(( total / workers )) update_freq=1
  else
    max_tokens=$REF_MAX_TOKENS update_freq=$(( (REF_GPUS + workers - 1) / workers ))
  fi
  echo "==> $workers worker(s) x $max_tokens tokens x update-freq $update_freq =" \
    "$(( workers * max_tokens * update_freq )) tokens per update (published: $REF_GPUS x $REF_MAX_TOKENS = $total)"

  local device_args=()
  if [ "$gpus" -eq 0 ]; then
    device_args=(--cpu --ddp-backend legacy_ddp)
  elif [ "${FP16:-1}" = 1 ]; then
    device_args=(--fp16)
  fi
  local command=(fairseq-train)
  if [ "$nodes" -gt 1 ]; then
    : "${MASTER_ADDR:?MASTER_ADDR (address of the first node) is needed with NNODES > 1}"
    command=(torchrun --nnodes "$nodes" --node-rank "${NODE_RANK:-0}" --nproc-per-node "$gpus"
             --master-addr "$MASTER_ADDR" --master-port "${MASTER_PORT:-29500}" "$(command -v fairseq-train)")
  fi
  command+=("$@" --user-dir "$ROOT/evo_fairseq" --max-tokens "$max_tokens" --update-freq "$update_freq"
            "${device_args[@]}")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "${command[@]}"; echo
    return
  fi
  "${command[@]}"
}
