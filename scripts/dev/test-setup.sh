# shellcheck shell=bash
# Set-up the test suite needs besides the project's own packages; sourced by scripts/dev/run-tests.sh
# (`pixi run test`, `venv.sh test`); it exports YOLO_QUANT_PYTHON for the tests. Idempotent and cached.
#   - NVIDIA's real TensorRT 10.7 / 10.13 / 11.4 Python APIs with stand-in native libraries, in both pip
#     layouts (front end `tensorrt`, and bindings only `tensorrt_bindings`), from
#     ../shared/trt-stubs when that folder exists (cached in ~/.cache/yolov10-trt-toolkit);
#   - .venv-quant with nvidia-modelopt (scripts/dev/setup-quant-venv.sh), or inside Pixi the Pixi
#     `quant` environment; QUANT=0 skips it and the quantization tests then skip.
# Environment: PYTHON (the interpreter that runs the tests), QUANT_VENV (default .venv-quant), QUANT.
_py=${PYTHON:-python3}
if [ -d ../shared/trt-stubs ]; then
  PYTHON="$_py" bash scripts/dev/install-trt-apis.sh || echo "warning: TensorRT API stubs not installed" >&2
fi
if [ "${QUANT:-1}" = 1 ] && [ -n "${PIXI_PROJECT_ROOT:-}" ] && [ -x "${CONDA_PREFIX:-}/../quant/bin/python" ]; then
  # Inside `pixi run test`: the Pixi `quant` environment (the task's depends-on installed it).
  YOLO_QUANT_PYTHON=$(cd "$CONDA_PREFIX/../quant/bin" && pwd)/python
  export YOLO_QUANT_PYTHON
elif [ "${QUANT:-1}" = 1 ]; then
  export QUANT_VENV=${QUANT_VENV:-.venv-quant}
  # ModelOpt needs torch; python3.11 takes the local CPU build of torch 2.13.0 on these machines.
  _qpy=python3
  command -v python3.11 >/dev/null && _qpy=python3.11
  PYTHON=$_qpy bash scripts/dev/setup-quant-venv.sh
  export YOLO_QUANT_PYTHON="$PWD/$QUANT_VENV/bin/python"
fi
unset _py _qpy
