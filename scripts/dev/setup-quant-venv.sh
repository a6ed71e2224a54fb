#!/usr/bin/env bash
# The quantization environment (no Pixi): .venv-quant with the project + ModelOpt ONNX.
#
#   bash scripts/dev/setup-quant-venv.sh            # create/update .venv-quant
#   .venv-quant/bin/python scripts/cv-models/quantize_onnx.py --help
#
# ModelOpt's [onnx] extra pulls onnxruntime-gpu, which installs the same `onnxruntime` package
# directory as onnxruntime (CPU): the two must never share an environment, so ModelOpt gets its
# own venv and the evaluation venv (.venv, onnxruntime CPU) never sees it. onnxruntime-gpu also
# runs the CPU EP, so calibration works on machines without a GPU.
#
# ModelOpt requires torch>=2.8. An unpinned torch pulls a multi-GB CUDA build; QUANT_TORCH
# (default 2.13.0) pins the version, which on CPU-only CI machines is a local CPU wheel.
# Set QUANT_TORCH="" to let pip choose (GPU machines).
# tensorrt-rtx-cu13 is added so the TensorRT-RTX builder can build the quantized ONNX on CPU
# (QUANT_WITH_TRT_RTX=0 to skip).
#
# Environment: PYTHON (default python3), QUANT_VENV (default .venv-quant).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
QUANT_VENV=${QUANT_VENV:-.venv-quant}
QUANT_TORCH=${QUANT_TORCH-2.13.0}
QUANT_WITH_TRT_RTX=${QUANT_WITH_TRT_RTX:-1}

stamp="$QUANT_VENV/.installed-$(cat pyproject.toml "$0" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  echo "$QUANT_VENV is up to date"
  exit 0
fi
if [ ! -x "$QUANT_VENV/bin/python" ]; then
  "$PYTHON" -m venv "$QUANT_VENV"
fi
# A venv inside the work tree must never be committed; .gitignore covers .venv/ only.
printf '*\n' > "$QUANT_VENV/.gitignore"
# shellcheck source=scripts/dev/pip-install.sh
source scripts/dev/pip-install.sh
pip=(pip_install "$QUANT_VENV/bin/python")
"${pip[@]}" --upgrade pip
if [ -n "$QUANT_TORCH" ]; then
  "${pip[@]}" "torch==$QUANT_TORCH"
fi
extra=()
[ "$QUANT_WITH_TRT_RTX" = 1 ] && extra+=(tensorrt-rtx-cu13)
# The project's base dependencies + its quant extra (ModelOpt, pinned in pyproject.toml); never the cpu extra.
"${pip[@]}" -e ".[quant]" "${extra[@]}"
if "$QUANT_VENV/bin/python" -m pip show -q onnxruntime >/dev/null 2>&1; then
  echo "error: $QUANT_VENV holds the CPU onnxruntime next to onnxruntime-gpu; remove $QUANT_VENV and rerun" >&2
  exit 1
fi
"$QUANT_VENV/bin/python" -c "import modelopt, onnxruntime; print('modelopt', modelopt.__version__, '| onnxruntime-gpu', onnxruntime.__version__)"
rm -f "$QUANT_VENV"/.installed-* && touch "$stamp"
