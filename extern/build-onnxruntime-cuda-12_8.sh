#!/usr/bin/env bash
# Build an ONNX Runtime Python wheel with the CUDA EP (and, with --use-tensorrt, the
# TensorRT EP) from extern/onnxruntime, cloned at a pinned tag when missing.
# Everything it writes (build tree, wheel, log) goes under the -o folder.
# See extern/howto-build-onnxruntime-with-pixi-tensorrt.md.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "${SCRIPT_DIR}/.." && pwd)"
ORT_DIR="${ONNXR_SRC_DIR:-${SCRIPT_DIR}/onnxruntime}"
ORT_REPO="${ONNXR_REPO_URL:-https://github.com/microsoft/onnxruntime.git}"
# Tag cloned when extern/onnxruntime is missing: 1.23.2 builds against TensorRT 10.x;
# TensorRT 11 needs ORT >= 1.27 (picked automatically when libnvinfer.so.11 is found).
ORT_REF_TRT10="v1.23.2"
ORT_REF_TRT11="v1.27.0"
ORT_REF="${ONNXR_GIT_REF:-}"
CONFIG="${ONNXR_CONFIG:-Release}"
CUDA_ARCHS="${ONNXR_CUDA_ARCHS:-120}"
PYTHON_BIN="${PYTHON:-python}"
OUTPUT_DIR=""
USE_TRT=0
DRY_RUN=0
TRT_HOME_ARG=""
NPROC="$(nproc 2>/dev/null || echo 2)"
JOBS="${ONNXR_JOBS:-$(( NPROC > 1 ? NPROC / 2 : 1 ))}"
EXTRA_ARGS=()

log() { echo "[build-ort] $*"; }
die() { echo "[build-ort] error: $*" >&2; exit 2; }

usage() {
  cat <<EOF
Build ONNX Runtime (CUDA EP, optionally TensorRT EP) from extern/onnxruntime into a wheel.

usage: extern/build-onnxruntime-cuda-12_8.sh -o <output-dir> [options] [-- <extra build.sh args>]

  -o, --output-dir DIR   build tree, wheel and log go here (e.g. tmp/ort-build)
  --use-tensorrt         also build the TensorRT EP (--use_tensorrt --tensorrt_home)
  --tensorrt-home DIR    TensorRT install (default: \$TENSORRT_HOME, else searched:
                         /usr/local/tensorrt, the parents of LD_LIBRARY_PATH folders
                         holding libnvinfer, /usr)
  --cuda-archs LIST      CMAKE_CUDA_ARCHITECTURES (default ${CUDA_ARCHS}; e.g. "90;120")
  --ort-ref REF          git tag/branch to clone when extern/onnxruntime is missing
                         (default ${ORT_REF_TRT10}; ${ORT_REF_TRT11} when TensorRT 11 is found)
  -j, --jobs N           parallel build jobs (default ${JOBS}; each nvcc job may use 4+ GB)
  --dry-run              print the build.sh command line and exit (no clone, no build)
  -h, --help             this help

environment: CUDA_HOME, CUDNN_HOME, TENSORRT_HOME, PYTHON, ONNXR_CONFIG (Release),
  ONNXR_GIT_REF, ONNXR_CUDA_ARCHS, ONNXR_JOBS, ONNXR_SRC_DIR, ONNXR_REPO_URL

examples:
  pixi run -e rtx5090 bash extern/build-onnxruntime-cuda-12_8.sh -o tmp/ort-build --use-tensorrt --dry-run
  pixi run -e rtx5090 bash extern/build-onnxruntime-cuda-12_8.sh -o tmp/ort-build --use-tensorrt
  pixi run -e rtx5090 bash extern/build-onnxruntime-cuda-12_8.sh -o tmp/ort-build --cuda-archs "90;120" -j 8
EOF
}

need_value() {
  if [ $# -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value (see --help)"; fi
  case "$2" in -*) die "$1 needs a value, got option '$2' (see --help)" ;; esac
}

while [ $# -gt 0 ]; do
  case "$1" in
    -o|--output-dir) need_value "$@"; OUTPUT_DIR="$2"; shift 2 ;;
    --use-tensorrt) USE_TRT=1; shift ;;
    --tensorrt-home) need_value "$@"; TRT_HOME_ARG="$2"; shift 2 ;;
    --cuda-archs) need_value "$@"; CUDA_ARCHS="$2"; shift 2 ;;
    --ort-ref) need_value "$@"; ORT_REF="$2"; shift 2 ;;
    -j|--jobs) need_value "$@"; JOBS="$2"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA_ARGS+=("$@"); break ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

[ -n "${OUTPUT_DIR}" ] || die "missing -o/--output-dir, e.g. -o tmp/ort-build"
case "${JOBS}" in ''|*[!0-9]*) die "--jobs must be a positive number, got '${JOBS}'" ;; esac
case "${CUDA_ARCHS}" in ''|*[!0-9\;a-z-]*) die "--cuda-archs must look like 120 or \"90;120\", got '${CUDA_ARCHS}'" ;; esac
case "${OUTPUT_DIR}" in /*) ;; *) OUTPUT_DIR="${ROOT_DIR}/${OUTPUT_DIR}" ;; esac

# --- toolchain discovery --------------------------------------------------------

find_cuda_home() {
  local nvcc
  if [ -n "${CUDA_HOME:-}" ]; then echo "${CUDA_HOME}"; return 0; fi
  if nvcc="$(command -v nvcc 2>/dev/null)"; then
    nvcc="$(readlink -f "${nvcc}")"
    dirname "$(dirname "${nvcc}")"
    return 0
  fi
  [ -d /usr/local/cuda ] && { echo /usr/local/cuda; return 0; }
  return 1
}

find_cudnn_home() {
  local d
  if [ -n "${CUDNN_HOME:-}" ]; then echo "${CUDNN_HOME}"; return 0; fi
  # pip's nvidia-cudnn-cuXX (what onnxruntime-gpu uses) first
  d="$("${PYTHON_BIN}" -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null || true)"
  if [ -n "${d}" ] && [ -f "${d}/include/cudnn.h" ]; then echo "${d}"; return 0; fi
  for d in "${CUDA_HOME_FOUND:-/usr/local/cuda}" /usr; do
    if [ -f "${d}/include/cudnn.h" ] || [ -f "${d}/include/x86_64-linux-gnu/cudnn.h" ]; then
      echo "${d}"; return 0
    fi
  done
  return 1
}

# A TensorRT prefix has NvInfer.h and libnvinfer.so* in one of the usual sub-folders.
is_trt_home() {
  local p="$1" inc=0 lib=0 sub f
  for sub in include include/x86_64-linux-gnu targets/x86_64-linux-gnu/include; do
    [ -f "${p}/${sub}/NvInfer.h" ] && inc=1
  done
  for sub in lib lib64 lib/x86_64-linux-gnu targets/x86_64-linux-gnu/lib; do
    for f in "${p}/${sub}"/libnvinfer.so*; do [ -e "${f}" ] && lib=1; done
  done
  [ "${inc}" = 1 ] && [ "${lib}" = 1 ]
}

# Same places trt-doctor searches: TENSORRT_HOME, LD_LIBRARY_PATH, the container paths.
find_tensorrt_home() {
  local cands=() d old_ifs
  [ -n "${TENSORRT_HOME:-}" ] && cands+=("${TENSORRT_HOME}")
  old_ifs="${IFS}"; IFS=:
  for d in ${LD_LIBRARY_PATH:-}; do
    [ -n "${d}" ] || continue
    ls "${d}"/libnvinfer.so* >/dev/null 2>&1 || continue
    cands+=("$(dirname "${d}")")                      # <home>/lib
    cands+=("$(dirname "$(dirname "$(dirname "${d}")")")")  # <home>/targets/<arch>/lib
  done
  IFS="${old_ifs}"
  cands+=(/usr/local/tensorrt /usr/local/tensorrt/targets/x86_64-linux-gnu /opt/tensorrt /usr)
  for d in "${cands[@]}"; do
    if is_trt_home "${d}"; then echo "${d}"; return 0; fi
  done
  return 1
}

CUDA_HOME_FOUND="$(find_cuda_home || true)"
[ -n "${CUDA_HOME_FOUND}" ] || die "CUDA toolkit not found: set CUDA_HOME (e.g. /usr/local/cuda) or put nvcc on PATH"
CUDNN_HOME_FOUND="$(find_cudnn_home || true)"
[ -n "${CUDNN_HOME_FOUND}" ] || die "cuDNN headers not found: set CUDNN_HOME (folder with include/cudnn.h), e.g. /usr"

TRT_HOME_FOUND=""
if [ "${USE_TRT}" = 1 ]; then
  if [ -n "${TRT_HOME_ARG}" ]; then
    is_trt_home "${TRT_HOME_ARG}" || die "--tensorrt-home ${TRT_HOME_ARG}: no NvInfer.h + libnvinfer.so* under it"
    TRT_HOME_FOUND="${TRT_HOME_ARG}"
  else
    TRT_HOME_FOUND="$(find_tensorrt_home || true)"
    [ -n "${TRT_HOME_FOUND}" ] || die "TensorRT not found (NvInfer.h + libnvinfer.so*): pass --tensorrt-home or set TENSORRT_HOME; run 'pixi run -e rtx5090 trt-doctor'"
  fi
fi

trt_major() {  # major of the libnvinfer.so.N under a TensorRT home, empty if unknown
  local f n
  for f in "$1"/lib/libnvinfer.so.* "$1"/lib64/libnvinfer.so.* "$1"/lib/x86_64-linux-gnu/libnvinfer.so.* \
           "$1"/targets/x86_64-linux-gnu/lib/libnvinfer.so.*; do
    [ -e "${f}" ] || continue
    n="${f##*/libnvinfer.so.}"; n="${n%%.*}"
    case "${n}" in ''|*[!0-9]*) continue ;; esac
    echo "${n}"; return 0
  done
}
if [ -z "${ORT_REF}" ]; then
  ORT_REF="${ORT_REF_TRT10}"
  if [ -n "${TRT_HOME_FOUND}" ] && [ "$(trt_major "${TRT_HOME_FOUND}")" = 11 ]; then ORT_REF="${ORT_REF_TRT11}"; fi
fi

BUILD_DIR="${OUTPUT_DIR}/build"
CMD=("${ORT_DIR}/build.sh"
  --config "${CONFIG}"
  --build_dir "${BUILD_DIR}"
  --update --build
  --parallel "${JOBS}"
  --build_wheel
  --skip_tests
  --use_cuda
  --cuda_home "${CUDA_HOME_FOUND}"
  --cudnn_home "${CUDNN_HOME_FOUND}")
if [ "${USE_TRT}" = 1 ]; then
  CMD+=(--use_tensorrt --tensorrt_home "${TRT_HOME_FOUND}")
fi
CMD+=(--cmake_extra_defines "CMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHS}")
if [ "$(id -u)" = 0 ]; then CMD+=(--allow_running_as_root); fi
if [ ${#EXTRA_ARGS[@]} -gt 0 ]; then CMD+=("${EXTRA_ARGS[@]}"); fi

if [ "${DRY_RUN}" = 1 ]; then
  log "dry run: source ${ORT_DIR} ($([ -d "${ORT_DIR}" ] && echo present || echo "missing; would clone ${ORT_REPO} at ${ORT_REF}"))"
  log "dry run: output ${OUTPUT_DIR}"
  printf '%q ' "${CMD[@]}"
  echo
  exit 0
fi

# --- the real build ---------------------------------------------------------------

mkdir -p "${OUTPUT_DIR}/logs"
LOG_FILE="${OUTPUT_DIR}/logs/build-$(date -u +%Y%m%dT%H%M%SZ).log"
exec > >(tee -a "${LOG_FILE}") 2>&1
log "log: ${LOG_FILE}"

command -v git >/dev/null 2>&1 || die "git not found (needed to clone ${ORT_REPO})"
command -v cmake >/dev/null 2>&1 || log "warning: cmake not on PATH; build.sh may fetch or fail (pip install cmake)"
if [ ! -d "${ORT_DIR}/.git" ] && [ ! -f "${ORT_DIR}/build.sh" ]; then
  log "cloning ${ORT_REPO} at ${ORT_REF} into ${ORT_DIR}"
  git clone --recursive --depth 1 --branch "${ORT_REF}" "${ORT_REPO}" "${ORT_DIR}"
else
  log "using existing source ${ORT_DIR} ($(git -C "${ORT_DIR}" describe --tags --always 2>/dev/null || echo unknown))"
fi

export CUDA_HOME="${CUDA_HOME_FOUND}" CUDNN_HOME="${CUDNN_HOME_FOUND}"
export PATH="${CUDA_HOME_FOUND}/bin:${PATH}"
log "python: $("${PYTHON_BIN}" -V 2>&1)  CUDA_HOME=${CUDA_HOME}  CUDNN_HOME=${CUDNN_HOME}  TENSORRT_HOME=${TRT_HOME_FOUND:-<none>}"
log "running: ${CMD[*]}"
(cd "${ORT_DIR}" && "${CMD[@]}")

WHEELS=("${BUILD_DIR}/${CONFIG}/dist"/*.whl)
[ -e "${WHEELS[0]}" ] || die "build finished but no wheel in ${BUILD_DIR}/${CONFIG}/dist; see ${LOG_FILE}"
log "wheel(s):"
printf '  %s\n' "${WHEELS[@]}"
log "install: pixi run -e rtx5090 python -m pip uninstall -y onnxruntime onnxruntime-gpu && pixi run -e rtx5090 python -m pip install ${WHEELS[0]}"
log "verify:  pixi run -e rtx5090 trt-doctor"
