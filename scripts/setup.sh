#!/usr/bin/env bash
# Set up evo-fairseq: torch (kept if present), fairseq, the tokenisation/BPE/scoring
# tools, and this package in editable mode.
#
# Usage: [PYTHON=python3.12] [VENV=DIR] bash scripts/setup.sh [--test]
#   --test   also install the test requirements (pytest, pytest-xdist)
#   PYTHON   interpreter for a new virtualenv (default python3); ignored inside an active one
#   VENV     where the virtualenv goes (default .venv/ at the repository root)
#
# Uses the active virtualenv; without one, creates VENV (or uses it if present).
# Python 3.10 to 3.13 (stops early on another). Idempotent: a second run only checks.
set -euo pipefail

TORCH_VERSION=2.13.0
FAIRSEQ_SPEC=fairseq-fixed==0.12.3.1
# Pythons that both torch 2.13 (3.10-3.14 on PyPI) and fairseq-fixed 0.12.3.1 (classifiers
# 3.11, 3.12; 3.13 verified here, built from source; 3.14 untried) support.
PY_SUPPORTED="3.10 3.11 3.12 3.13"
# the recipes' tokenisation, BPE and scoring; TensorBoard for --tensorboard-logdir;
# matplotlib for the attention inspector's and the benchmarks' figures
TOOLS="sacremoses subword-nmt sacrebleu tensorboard matplotlib"
BUILD_TOOLS="setuptools>=64 wheel cython numpy"  # setuptools>=64: PEP 660 editable installs
TEST_TOOLS="pytest pytest-xdist"  # xdist: scripts/test.sh runs the tests in 2 processes

WITH_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TESTS=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (allowed: --test)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() { echo "setup.sh: $*" >&2; exit 2; }
# major.minor of an interpreter, or nothing if it does not run
py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }

# 0. The interpreter: the active virtualenv's, an existing VENV's, or PYTHON's (checked
#    before anything is created).
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
  WHERE="the active virtualenv $VIRTUAL_ENV"
  [ -x "$PY" ] || die "the active virtualenv $VIRTUAL_ENV has no bin/python"
  VENV_NEW=""
else
  VENV=${VENV:-$ROOT/.venv}
  case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
  if [ -x "$VENV/bin/python" ]; then
    PY="$VENV/bin/python"
    WHERE="the virtualenv $VENV"
    VENV_NEW=""
  else
    PY=${PYTHON:-python3}
    command -v "$PY" >/dev/null || die "PYTHON=$PY: no such interpreter"
    WHERE="PYTHON=$PY"
    VENV_NEW="$VENV"
  fi
fi
PY_FOUND=$(py_version "$PY")
[ -n "$PY_FOUND" ] || die "$PY ($WHERE) does not run"
if [ -n "${PYTHON:-}" ] && [ "$WHERE" != "PYTHON=$PYTHON" ]; then
  # PYTHON given, but an existing virtualenv decides: it must be the same Python.
  WANTED=$(py_version "$PYTHON")
  [ -n "$WANTED" ] || die "PYTHON=$PYTHON: no such interpreter"
  [ "$WANTED" = "$PY_FOUND" ] || die "PYTHON=$PYTHON is Python $WANTED but $WHERE has" \
    "Python $PY_FOUND; choose another VENV=DIR (or remove that one, or deactivate it)"
fi
case " $PY_SUPPORTED " in
  *" $PY_FOUND "*) ;;
  *) die "Python $PY_FOUND ($WHERE) is not supported; supported: $PY_SUPPORTED" \
       "(torch 2.13 and fairseq-fixed 0.12.3.1). Choose one with PYTHON=python3.X" ;;
esac
if [ -n "$VENV_NEW" ]; then
  echo "==> creating virtualenv $VENV_NEW (Python $PY_FOUND)"
  "$PY" -m venv "$VENV_NEW"
  PY="$VENV_NEW/bin/python"
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
# Pin the installed torch for every later install, so nothing can replace it (a
# replacement would be a multi-GB CUDA download). The pin is the distribution's
# version, what pip sees: torch.__version__ can carry a label (+cu130) that it lacks.
CONSTRAINTS=$(mktemp "${TMPDIR:-/tmp}/evo-fairseq-constraints.XXXXXX")
trap 'rm -f "$CONSTRAINTS"' EXIT
(cd / && "$PY" "$ROOT/scripts/torch_pin.py") > "$CONSTRAINTS"
export PIP_CONSTRAINT="$CONSTRAINTS"

# 2. build tools fairseq and fastBPE compile with, and setuptools for this package.
has "import setuptools, wheel, Cython, numpy, sys; sys.exit(int(setuptools.__version__.split('.')[0]) < 64)" || {
  echo "==> installing build tools"
  pip_install $BUILD_TOOLS
}

# 3. fairseq: keep a working one (e.g. upstream 0.12.2 on Python 3.10).
FAIRSEQ_FOUND=$( (cd / && "$PY" -c "import fairseq.models.transformer, fairseq; print(fairseq.__version__)" 2>/dev/null) || true)
if [ -n "$FAIRSEQ_FOUND" ]; then
  echo "==> keeping fairseq $FAIRSEQ_FOUND"
else
  echo "==> installing $FAIRSEQ_SPEC (compiles; takes a few minutes)"
  pip_install --no-build-isolation "$FAIRSEQ_SPEC"
  FAIRSEQ_FOUND=$(version_of fairseq)
fi

# 4. tokenisation, BPE, scoring, TensorBoard for fairseq-train --tensorboard-logdir, and
#    matplotlib for python -m evo_fairseq.inspect's figures.
has "import sacremoses, subword_nmt, sacrebleu, tensorboard, matplotlib" || {
  echo "==> installing $TOOLS"
  pip_install $TOOLS
}
has "import fastBPE" || {
  echo "==> installing fastBPE"
  pip_install --no-build-isolation fastBPE
}
if [ "$WITH_TESTS" = 1 ]; then
  has "import pytest, xdist" || {
    echo "==> installing $TEST_TOOLS"
    pip_install $TEST_TOOLS
  }
fi

# 5. this package, editable (PEP 660, pyproject.toml); its dependencies are all installed above.
has "import importlib.util as u, sys; s = u.find_spec('evo_fairseq'); sys.exit(s is None or s.origin != '$ROOT/evo_fairseq/__init__.py')" || {
  echo "==> installing evo_fairseq (editable)"
  pip_install --no-build-isolation --no-deps -e "$ROOT"
}
echo "==> ready: Python $PY_FOUND | torch $TORCH_FOUND | fairseq $FAIRSEQ_FOUND"
echo "    python: $PY"
