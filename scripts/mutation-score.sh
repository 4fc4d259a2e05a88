#!/usr/bin/env bash
# Mutation score of the evolving-attention core against its fast tests (a benchmark, not CI).
#
# Usage: bash scripts/mutation-score.sh [WORK_DIR]
#   WORK_DIR   where the copy of the project and mutmut's mutants/ go (default: a new temp dir)
#   VENV=DIR   the virtualenv with the project and mutmut installed (default: .venv);
#              install mutmut with: $VENV/bin/pip install 'mutmut>=3.8,<4'
#   JOBS=N     mutants tested at once (default: 2)
#   NICE=N     niceness of the run (default: 19)
#   MUTANTS=GLOBS  only the mutants whose names match (e.g. '*x_parse_alpha*'), space-separated
#   TESTS=PATHS, DESELECT=EXPR  another test selection (pytest paths; -k expression)
#
# mutmut mutates a copy of the working tree (nothing here changes), runs each mutant
# against the tests that cover the mutated function and prints the survivors' diffs;
# docs/results/mutation.md holds the last score and each survivor's explanation.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
JOBS="${JOBS:-2}"
NICE="${NICE:-19}"
MUTATE=(evo_fairseq/modules/evolving_map.py evo_fairseq/modules/evolving_attention.py)
# the fast subset: the gradchecks of every case and the CLI help run take minutes; CUDA
# cases skip on a CPU machine
read -r -a TESTS <<< "${TESTS:-tests/test_evolving_map.py tests/test_model.py tests/test_options.py}"
DESELECT="${DESELECT:-not test_forward_matches_the_composition and not test_help_text and not cuda}"

if [ $# -gt 1 ] || [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
if [ ! -x "$VENV/bin/mutmut" ]; then
  echo "error: no mutmut in $VENV (install it: $VENV/bin/pip install 'mutmut>=3.8,<4')" >&2
  exit 2
fi
WORK="${1:-$(mktemp -d -t evo-mutation.XXXXXX)}"
mkdir -p "$WORK"

# the working tree as it is (tracked and untracked files that git does not ignore)
cd "$ROOT"
git ls-files -co --exclude-standard -z | grep -zv '^checkpoints/' \
  | xargs -0 cp --parents -t "$WORK" 2>/dev/null || true
cd "$WORK"
rm -rf mutants
{
  echo "[mutmut]"
  echo "source_paths = evo_fairseq"
  echo "only_mutate ="
  printf '    %s\n' "${MUTATE[@]}"
  echo "pytest_add_cli_args_test_selection ="
  printf '    %s\n' "${TESTS[@]}" "-k" "$DESELECT"
  echo "pytest_add_cli_args ="
  printf '    %s\n' "-p" "no:cacheprovider" "-q"
  # torch is not fork-safe once its thread pool runs: fork each mutant from a clean server
  echo "process_isolation = forkserver"
} > setup.cfg

# one thread per mutant (JOBS of them at once)
export PATH="$VENV/bin:$PATH" PYTHONWARNINGS=ignore OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
start=$(date +%s)
read -r -a MUTANT_GLOBS <<< "${MUTANTS:-}"
nice -n "$NICE" mutmut run --max-children "$JOBS" "${MUTANT_GLOBS[@]}" || true
echo "mutation run: $(( $(date +%s) - start )) s in $WORK"
nice -n "$NICE" mutmut results --all true > results.txt || true
for status in killed survived "no tests" timeout suspicious skipped; do
  printf '%-10s %s\n' "$status" "$(grep -c ": $status\$" results.txt || true)"
done
grep -E ": (survived|no tests)$" results.txt | sed 's/:.*//' | while read -r name; do
  echo "=== $name"
  mutmut show "$name" || true
done
