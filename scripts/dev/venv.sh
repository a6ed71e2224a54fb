#!/usr/bin/env bash
# The pip/venv path (no Pixi): set up what a job needs from scratch (idempotent), then run it.
#
#   bash scripts/dev/venv.sh demo     # evaluate the bundled model on the bundled set (CPU or GPU)
#   bash scripts/dev/venv.sh test     # the whole test suite, with all its set-up (what CI runs)
#   bash scripts/dev/venv.sh lint     # ruff check + ruff format --check
#   bash scripts/dev/venv.sh python scripts/cv-models/eval_yolov10m_onnx_coco.py --help
#
# `test` also installs the TensorRT-RTX builder (tensorrt-rtx-cu13: real engine builds on CPU) into
# .venv and runs scripts/dev/run-tests.sh (TensorRT API stubs, the ModelOpt venv; QUANT=0 skips that).
# Environment: PYTHON (default python3), VENV (default .venv), QUANT_VENV (default .venv-quant), QUANT.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

ensure_venv() {  # ensure_venv EXTRAS
  local stamp
  stamp="$VENV/.installed-$1-$(sha256sum pyproject.toml | cut -c1-16)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$1]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

job=${1:-demo}
[ $# -gt 0 ] && shift
case "$job" in
  demo) ensure_venv cpu; exec "$VENV/bin/python" scripts/cv-models/demo.py "$@" ;;
  test) ensure_venv cpu,test,trt-rtx,plot,fast-eval,gpu-decode; PYTHON="$VENV/bin/python" exec bash scripts/dev/run-tests.sh "$@" ;;
  lint) ensure_venv cpu,test; "$VENV/bin/ruff" check . && exec "$VENV/bin/ruff" format --check . ;;
  python) ensure_venv cpu,test,plot,fast-eval; exec "$VENV/bin/python" "$@" ;;
  *) echo "unknown job '$job' (demo | test | lint | python ...)" >&2; exit 2 ;;
esac
