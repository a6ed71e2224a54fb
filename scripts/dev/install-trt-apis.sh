#!/usr/bin/env bash
# Pre-install NVIDIA's real TensorRT Python API (bindings + NULL-returning stand-in native libs, see
# ../shared/trt-stubs/README.md) for every version the TensorRT-facing tests run against, in both
# package layouts a pip user can end up with, into ${XDG_CACHE_HOME:-~/.cache}/yolov10-trt-toolkit/trt-api/
#   <version>/{site,lib}            bindings + the `tensorrt` front end (pip install tensorrt-cuXX)
#   <version>-bindings/{site,lib}   bindings only, module `tensorrt_bindings` (pip install tensorrt-cuXX-bindings)
# tests/test_trt_api_versions.py then reruns the TensorRT-facing tests once per version and layout.
# Variants already installed (an importable site/ folder of the right version) are kept.
# Needs PyPI access, gcc, nm.
#
#   bash scripts/dev/install-trt-apis.sh                      # 10.7.0 10.13.3.9 11.4.0.106, both layouts
#   bash scripts/dev/install-trt-apis.sh 10.13.3.9            # just one version (both layouts)
#   LAYOUTS=frontend bash scripts/dev/install-trt-apis.sh     # one layout: frontend | bindings
#   TRT_STUBS=/path/to/trt-stubs PYTHON=.venv/bin/python bash scripts/dev/install-trt-apis.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
stubs=${TRT_STUBS:-$here/../shared/trt-stubs}
py=${PYTHON:-python3}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/yolov10-trt-toolkit/trt-api
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(10.7.0 10.13.3.9 11.4.0.106)
read -r -a layouts <<< "${LAYOUTS:-frontend bindings}"
[ -x "$stubs/install-trt-api.sh" ] || [ -f "$stubs/install-trt-api.sh" ] || {
  echo "install-trt-apis: $stubs/install-trt-api.sh not found; set TRT_STUBS" >&2; exit 2; }
status=0
for v in "${versions[@]}"; do
  for layout in "${layouts[@]}"; do
    case "$layout" in
      frontend) dst=$cache/$v; mod=tensorrt; frontend=1 ;;
      bindings) dst=$cache/$v-bindings; mod=tensorrt_bindings; frontend=0 ;;
      *) echo "install-trt-apis: unknown layout $layout (frontend | bindings)" >&2; exit 2 ;;
    esac
    # bindings-only means exactly that: no `tensorrt` module beside tensorrt_bindings
    check="import $mod, sys; sys.exit($mod.__version__ != '$v')"
    [ "$layout" = bindings ] && check="$check if not __import__('importlib.util').util.find_spec('tensorrt') else 1"
    if LD_LIBRARY_PATH="$dst/lib" PYTHONPATH="$dst/site" "$py" -c "$check" 2>/dev/null; then
      echo "tensorrt API $v ($layout): cached in $dst"
      continue
    fi
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.$v-$layout.XXXXXX")
    if FRONTEND=$frontend bash "$stubs/install-trt-api.sh" "$v" "$tmp" "$py"; then
      rm -rf "$dst" && mv "$tmp" "$dst"   # appears only when complete
      echo "tensorrt API $v ($layout): installed in $dst"
    else
      rm -rf "$tmp"; echo "tensorrt API $v ($layout): install FAILED" >&2; status=1
    fi
  done
done
exit $status
