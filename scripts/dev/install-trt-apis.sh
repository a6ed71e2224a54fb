#!/usr/bin/env bash
# Pre-install NVIDIA's real TensorRT Python API (bindings + NULL-returning stand-in native libs, see
# ../shared/trt-stubs/README.md) for every version the TensorRT-facing tests run against, into
#   ${XDG_CACHE_HOME:-~/.cache}/yolov10-trt-toolkit/trt-api/<version>/{site,lib}
# tests/test_trt_api_versions.py then reruns the TensorRT-facing tests once per version.
# Versions already installed (an importable site/ folder) are kept. Needs PyPI access, gcc, nm.
#
#   bash scripts/dev/install-trt-apis.sh                      # 10.7.0 10.13.3.9 11.4.0.106
#   bash scripts/dev/install-trt-apis.sh 10.13.3.9            # just one
#   TRT_STUBS=/path/to/trt-stubs PYTHON=.venv/bin/python bash scripts/dev/install-trt-apis.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
stubs=${TRT_STUBS:-$here/../shared/trt-stubs}
py=${PYTHON:-python3}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/yolov10-trt-toolkit/trt-api
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(10.7.0 10.13.3.9 11.4.0.106)
[ -x "$stubs/install-trt-api.sh" ] || [ -f "$stubs/install-trt-api.sh" ] || {
  echo "install-trt-apis: $stubs/install-trt-api.sh not found; set TRT_STUBS" >&2; exit 2; }
status=0
for v in "${versions[@]}"; do
  dst=$cache/$v
  if LD_LIBRARY_PATH="$dst/lib" PYTHONPATH="$dst/site" "$py" -c "import tensorrt, sys; sys.exit(tensorrt.__version__ != '$v')" 2>/dev/null; then
    echo "tensorrt API $v: cached in $dst"
    continue
  fi
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.$v.XXXXXX")
  if bash "$stubs/install-trt-api.sh" "$v" "$tmp" "$py"; then
    rm -rf "$dst" && mv "$tmp" "$dst"   # appears only when complete
    echo "tensorrt API $v: installed in $dst"
  else
    rm -rf "$tmp"; echo "tensorrt API $v: install FAILED" >&2; status=1
  fi
done
exit $status
