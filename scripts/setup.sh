#!/usr/bin/env bash
# Set up evo-fairseq: torch (kept if present), fairseq, the tokenisation/BPE/scoring
# tools, and this package in editable mode.
#
# Usage: bash scripts/setup.sh [--test]
#   --test   also install the test requirements (pytest, matplotlib)
#
# Uses the active virtualenv; without one, creates .venv/ at the repository root.
# Idempotent: a second run only checks and takes seconds.
set -euo pipefail

TORCH_VERSION=2.13.0
FAIRSEQ_SPEC=fairseq-fixed==0.12.3.1
TOOLS="sacremoses subword-nmt sacrebleu tensorboard"
TEST_TOOLS="pytest matplotlib"

WITH_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TESTS=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (allowed: --test)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
else
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "==> creating virtualenv $ROOT/.venv"
    python3 -m venv "$ROOT/.venv"
  fi
  PY="$ROOT/.venv/bin/python"
fi
PIP=("$PY" -m pip --disable-pip-version-check)
has() { (cd / && "$PY" -c "$1") >/dev/null 2>&1; }  # not from here: . would shadow the install
# pip install, without the noise of find-links/index locations that do not exist
pip_install() {
  "${PIP[@]}" install -q "$@" 2>&1 | { grep -v "^WARNING: Location '" || true; }
  return "${PIPESTATUS[0]}"
}

# 1. torch: keep whatever works (GPU users bring their own CUDA build).
version_of() { (cd / && "$PY" -c "import $1 as m; print(m.__version__)" 2>/dev/null) || true; }
TORCH_FOUND=$(version_of torch)
if [ -n "$TORCH_FOUND" ]; then
  echo "==> keeping torch $TORCH_FOUND"
else
  echo "==> installing torch==$TORCH_VERSION"
  pip_install "torch==$TORCH_VERSION"
  TORCH_FOUND=$(version_of torch)
fi
# Pin the installed torch for every later install, so nothing can replace it
# (a replacement would be a multi-GB CUDA download).
CONSTRAINTS="$ROOT/.venv-constraints.txt"
echo "torch==$TORCH_FOUND" > "$CONSTRAINTS"
export PIP_CONSTRAINT="$CONSTRAINTS"

# 2. build tools fairseq and fastBPE compile with.
has "import setuptools, wheel, Cython, numpy" || {
  echo "==> installing build tools"
  pip_install setuptools wheel cython numpy
}

# 3. fairseq: keep a working one (e.g. upstream 0.12.2 on Python <= 3.10).
FAIRSEQ_FOUND=$( (cd / && "$PY" -c "import fairseq.models.transformer, fairseq; print(fairseq.__version__)" 2>/dev/null) || true)
if [ -n "$FAIRSEQ_FOUND" ]; then
  echo "==> keeping fairseq $FAIRSEQ_FOUND"
else
  echo "==> installing $FAIRSEQ_SPEC (compiles; takes a few minutes)"
  pip_install --no-build-isolation "$FAIRSEQ_SPEC"
  FAIRSEQ_FOUND=$(version_of fairseq)
fi

# 4. tokenisation, BPE, scoring, and TensorBoard for fairseq-train --tensorboard-logdir.
has "import sacremoses, subword_nmt, sacrebleu, tensorboard" || {
  echo "==> installing $TOOLS"
  pip_install $TOOLS
}
has "import fastBPE" || {
  echo "==> installing fastBPE"
  pip_install --no-build-isolation fastBPE
}
if [ "$WITH_TESTS" = 1 ]; then
  has "import pytest, matplotlib" || {
    echo "==> installing $TEST_TOOLS"
    pip_install $TEST_TOOLS
  }
fi

# 5. this package, editable; its dependencies are all installed above.
has "import importlib.util as u, sys; s = u.find_spec('evo_fairseq'); sys.exit(s is None or s.origin != '$ROOT/evo_fairseq/__init__.py')" || {
  echo "==> installing evo_fairseq (editable)"
  pip_install --no-build-isolation --no-deps -e "$ROOT"
}
echo "==> ready: torch $TORCH_FOUND | fairseq $FAIRSEQ_FOUND"
echo "    python: $PY"
