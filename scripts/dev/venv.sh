#!/usr/bin/env bash
# The pip/venv path (no Pixi): set up what a job needs from scratch (idempotent), then run it.
#
#   bash scripts/dev/venv.sh demo     # evaluate the bundled model on the bundled set (CPU or GPU)
#   bash scripts/dev/venv.sh test     # the whole test suite, with all its set-up (what CI runs)
#   bash scripts/dev/venv.sh lint     # ruff
#   bash scripts/dev/venv.sh python scripts/cv-models/eval_yolov10m_onnx_coco.py --help
#
# `test` also sets up, where possible:
#   - the TensorRT-RTX builder (tensorrt-rtx-cu13, PyPI) in .venv: real engine builds on CPU;
#   - NVIDIA's real TensorRT 10.7 / 10.13 / 11.4 Python APIs from ../shared/trt-stubs (cached in
#     ~/.cache/yolov10-trt-toolkit), when that folder exists;
#   - .venv-quant with nvidia-modelopt (scripts/dev/setup-quant-venv.sh; QUANT=0 skips it, and the
#     quantization tests then skip).
# Environment: PYTHON (default python3), VENV (default .venv), QUANT_VENV (default .venv-quant), QUANT.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
QUANT=${QUANT:-1}

ensure_venv() {  # ensure_venv EXTRAS
  local stamp="$VENV/.installed-$1-$(sha256sum pyproject.toml | cut -c1-16)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$1]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

test_setup() {
  ensure_venv cpu,test,trt-rtx
  if [ -d ../shared/trt-stubs ]; then
    PYTHON="$VENV/bin/python" bash scripts/dev/install-trt-apis.sh || echo "warning: TensorRT API stubs not installed" >&2
  fi
  if [ "$QUANT" = 1 ]; then
    export QUANT_VENV=${QUANT_VENV:-.venv-quant}
    # ModelOpt needs torch; python3.11 can take the local CPU build of torch 2.13.0 on these machines.
    local qpy=$PYTHON
    command -v python3.11 >/dev/null && qpy=python3.11
    PYTHON=$qpy bash scripts/dev/setup-quant-venv.sh
    export YOLO_QUANT_PYTHON="$PWD/$QUANT_VENV/bin/python"
  fi
}

job=${1:-demo}
[ $# -gt 0 ] && shift
case "$job" in
  demo) ensure_venv cpu; exec "$VENV/bin/python" scripts/cv-models/demo.py "$@" ;;
  test) test_setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  lint) ensure_venv cpu,test; exec "$VENV/bin/ruff" check . ;;
  python) ensure_venv cpu,test; exec "$VENV/bin/python" "$@" ;;
  *) echo "unknown job '$job' (demo | test | lint | python ...)" >&2; exit 2 ;;
esac
