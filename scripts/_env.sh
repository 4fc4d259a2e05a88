# Sourced by the recipes: ROOT is the repository; without an active virtualenv,
# use the one scripts/setup.sh creates: VENV if set, else .venv/ at the root.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${VIRTUAL_ENV:-}" ]; then
  _EVO_VENV=${VENV:-$ROOT/.venv}
  if [ -f "$_EVO_VENV/bin/activate" ]; then
    # shellcheck disable=SC1091
    source "$_EVO_VENV/bin/activate"
  elif [ -n "${VENV:-}" ]; then
    echo "VENV=$VENV is not a virtualenv: run 'VENV=$VENV bash scripts/setup.sh' first" >&2
    exit 2
  fi
  unset _EVO_VENV
fi
command -v fairseq-train >/dev/null || {
  echo "fairseq is not installed: run 'bash scripts/setup.sh' first" >&2
  exit 2
}
