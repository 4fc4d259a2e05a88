#!/usr/bin/env bash
# Measure the README's two commands on a fresh clone, timestamping every output line, then run
# the README's after-command-1 blocks there; what docs/results/readme-commands.md reports.
#
# Usage: bash docs/results/readme-commands.sh [REPO] [OUT_DIR]   (default: this clone, /tmp/readme-commands)
set -uo pipefail
REPO=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
OUT=${2:-/tmp/readme-commands}
CLONE=$OUT/clone
rm -rf "$OUT"; mkdir -p "$OUT"
git clone -q "$REPO" "$CLONE" && cd "$CLONE"
git rev-parse HEAD > "$OUT/commit"
unset VIRTUAL_ENV
export PIP_NO_CACHE_DIR=1
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date +%s)" "$line"; done; }

t0=$(date +%s)
bash -c 'bash scripts/setup.sh && bash examples/multi30k/run.sh' 2>&1 | stamp > "$OUT/command1.log"
echo "command 1: exit ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s (start $t0)" >> "$OUT/times"

(
  source .venv/bin/activate && export EVO=$PWD && cd /
  echo "Zwei Hunde spielen im Schnee." | fairseq-interactive "$EVO/work/multi30k/prep/data-bin" \
    --user-dir "$EVO/evo_fairseq" -s de -t en --beam 5 \
    --path "$EVO/work/multi30k/checkpoints/ea_transformer-seed1/checkpoint_last.pt" \
    --tokenizer moses --moses-no-escape --bpe subword_nmt --bpe-codes "$EVO/work/multi30k/prep/code"
  python - <<'PY'
import os
from evo_fairseq.models import EATransformerModel
work = os.path.join(os.environ["EVO"], "work", "multi30k")
de2en = EATransformerModel.from_pretrained(
    f"{work}/checkpoints/ea_transformer-seed1", checkpoint_file="checkpoint_last.pt",
    data_name_or_path=f"{work}/prep/data-bin", tokenizer="moses", moses_no_escape=True,
    bpe="subword_nmt", bpe_codes=f"{work}/prep/code")
print(de2en.translate("Ein Hund läuft durch den Schnee.", beam=5))
PY
  python -m evo_fairseq.inspect --source "Ein Hund läuft durch den Schnee." \
    --path "$EVO/work/multi30k/checkpoints/ea_transformer-seed1/checkpoint_last.pt" \
    --data-bin "$EVO/work/multi30k/prep/data-bin" -s de -t en --tokenizer moses \
    --bpe subword_nmt --bpe-codes "$EVO/work/multi30k/prep/code" --out-dir "$EVO/work/attention"
) > "$OUT/after-command1.log" 2>&1
echo "after command 1: exit $?" >> "$OUT/times"

t1=$(date +%s)
bash scripts/setup.sh --test 2>&1 | stamp > "$OUT/command2-setup.log"
t2=$(date +%s)
bash scripts/test.sh --durations=60 2>&1 | stamp > "$OUT/command2.log"
echo "command 2: exit ${PIPESTATUS[0]}, setup $((t2 - t1)) s, tests $(( $(date +%s) - t2 )) s" >> "$OUT/times"
