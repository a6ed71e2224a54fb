# shellcheck shell=bash
# Sourced by Pixi when the rtx5090 environment activates.
# Prepends the NVIDIA container's TensorRT library and trtexec folders that exist on
# this machine to LD_LIBRARY_PATH / PATH, keeping what those variables already hold
# (SSH sessions often arrive without LD_LIBRARY_PATH) and adding no empty entries.
_aqm_prepend() {  # _aqm_prepend VAR DIR...
  local var=$1 dir cur
  shift
  for dir in "$@"; do
    [ -d "$dir" ] || continue
    cur=${!var:-}
    case ":$cur:" in *":$dir:"*) continue ;; esac
    if [ -n "$cur" ]; then export "$var=$dir:$cur"; else export "$var=$dir"; fi
  done
}
# Listed last-first: the first one ends up in front.
_aqm_prepend LD_LIBRARY_PATH /usr/lib/x86_64-linux-gnu /usr/local/tensorrt/targets/x86_64-linux-gnu/lib
_aqm_prepend PATH /usr/src/tensorrt/bin /opt/tensorrt/bin
unset -f _aqm_prepend
