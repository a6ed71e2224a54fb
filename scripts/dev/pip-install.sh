#!/usr/bin/env bash
# pip_install PYTHON ARGS...: `PYTHON -m pip install -q ARGS...`, tried up to PIP_ATTEMPTS times (default 3).
# A download cut off mid-wheel fails the whole install; the next attempt resumes from pip's cache.
pip_install() {
  local python=$1 attempt=1
  shift
  until "$python" -m pip install -q --disable-pip-version-check --retries 10 "$@"; do
    if [ "$attempt" -ge "${PIP_ATTEMPTS:-3}" ]; then
      echo "error: pip install $* failed $attempt times; check the network or the package index, then rerun" >&2
      return 1
    fi
    attempt=$((attempt + 1))
    echo "pip install failed; attempt $attempt of ${PIP_ATTEMPTS:-3}" >&2
    sleep 5
  done
}
