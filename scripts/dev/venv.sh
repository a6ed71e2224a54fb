#!/usr/bin/env bash
# The pip/venv path (no Pixi): set up what a job needs from scratch (idempotent), then run it.
#
#   bash scripts/dev/venv.sh demo     # evaluate the bundled model on the bundled set (CPU or GPU)
#   bash scripts/dev/venv.sh test     # the whole test suite, with all its set-up (what CI runs)
#   bash scripts/dev/venv.sh lint     # ruff check + ruff format --check
#   bash scripts/dev/venv.sh python scripts/cv-models/eval_yolov10m_onnx_coco.py --help
#   bash scripts/dev/venv.sh python-gpu scripts/trt/trt_doctor.py
#   bash scripts/dev/venv.sh python-quant scripts/cv-models/quantize_onnx.py --help
#
# python: .venv with ONNX Runtime (CPU) and the TensorRT-RTX builder (tensorrt-rtx-cu13: engine builds on
#   CPU), the same packages as `test` (the Pixi default + test environments).
# python-gpu: .venv-gpu with onnxruntime-gpu, cuda-python, NVRTC and nvImageCodec (the Pixi rtx5090
#   environment), the TensorRT container's library folders on LD_LIBRARY_PATH / PATH.
# python-quant: .venv-quant with ModelOpt (scripts/dev/setup-quant-venv.sh; the Pixi quant environment).
# test: .venv as for python, then scripts/dev/run-tests.sh (TensorRT API stubs, the ModelOpt venv;
#   QUANT=0 skips that).
# Environment: PYTHON (default python3), VENV (default .venv), GPU_VENV (default .venv-gpu),
# QUANT_VENV (default .venv-quant), QUANT.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
GPU_VENV=${GPU_VENV:-.venv-gpu}
QUANT_VENV=${QUANT_VENV:-.venv-quant}
# The test and python jobs share one set of extras, so switching between them reinstalls nothing.
CPU_EXTRAS=cpu,test,trt-rtx,plot,fast-eval,gpu-decode
# shellcheck source=scripts/dev/pip-install.sh
source scripts/dev/pip-install.sh

ensure_venv() {  # ensure_venv EXTRAS
  local stamp
  stamp="$VENV/.installed-$1-$(sha256sum pyproject.toml | cut -c1-16)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  if [ ! -f "$stamp" ]; then
    pip_install "$VENV/bin/python" --upgrade pip
    pip_install "$VENV/bin/python" -e ".[$1]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

job=${1:-demo}
[ $# -gt 0 ] && shift
case "$job" in
  demo) ensure_venv cpu; exec "$VENV/bin/python" scripts/cv-models/demo.py "$@" ;;
  test) ensure_venv "$CPU_EXTRAS"; PYTHON="$VENV/bin/python" exec bash scripts/dev/run-tests.sh "$@" ;;
  lint) ensure_venv "$CPU_EXTRAS"; "$VENV/bin/ruff" check . && exec "$VENV/bin/ruff" format --check . ;;
  python) ensure_venv "$CPU_EXTRAS"; exec "$VENV/bin/python" "$@" ;;
  python-gpu)
    VENV=$GPU_VENV ensure_venv gpu,plot,fast-eval,gpu-decode
    # shellcheck source=scripts/env/activate-tensorrt-paths.sh
    source scripts/env/activate-tensorrt-paths.sh
    exec "$GPU_VENV/bin/python" "$@" ;;
  python-quant)
    QUANT_VENV=$QUANT_VENV bash scripts/dev/setup-quant-venv.sh >&2
    exec "$QUANT_VENV/bin/python" "$@" ;;
  *) echo "unknown job '$job' (demo | test | lint | python | python-gpu | python-quant ...)" >&2; exit 2 ;;
esac
