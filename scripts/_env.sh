# Sourced by the recipes: ROOT is the repository; without an active virtualenv,
# use the .venv/ that scripts/setup.sh creates.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f "$ROOT/.venv/bin/activate" ]; then
  # shellcheck disable=SC1091
  source "$ROOT/.venv/bin/activate"
fi
command -v fairseq-train >/dev/null || {
  echo "fairseq is not installed: run 'bash scripts/setup.sh' first" >&2
  exit 2
}
