#!/usr/bin/env bash
# The pip/venv path (no Pixi): set up .venv from scratch if needed, then run a job.
#
#   bash scripts/dev/venv.sh demo     # evaluate the bundled model on the bundled set
#   bash scripts/dev/venv.sh test     # the whole test suite (what CI runs)
#   bash scripts/dev/venv.sh lint     # ruff
#   bash scripts/dev/venv.sh python scripts/cv-models/eval_yolov10m_onnx_coco.py --help
#
# Environment: PYTHON (interpreter for the venv, default python3), VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

ensure_venv() {
  local stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e ".[cpu,test]"
    rm -f "$VENV"/.installed-* && touch "$stamp"
  fi
}

job=${1:-demo}
[ $# -gt 0 ] && shift
ensure_venv
case "$job" in
  demo) exec "$VENV/bin/python" scripts/cv-models/demo.py "$@" ;;
  test) exec "$VENV/bin/python" -m pytest -q "$@" ;;
  lint) exec "$VENV/bin/ruff" check . ;;
  python) exec "$VENV/bin/python" "$@" ;;
  *) echo "unknown job '$job' (demo | test | lint | python ...)" >&2; exit 2 ;;
esac
