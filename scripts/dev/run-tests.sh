#!/usr/bin/env bash
# The test suite: its extra set-up (scripts/dev/test-setup.sh, cached) and then pytest.
# Used by `pixi run test` and `bash scripts/dev/venv.sh test`; arguments go to pytest.
# PYTHON: the interpreter that runs the tests (default: python on PATH).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python}
# shellcheck source=scripts/dev/test-setup.sh
source scripts/dev/test-setup.sh
exec "$PYTHON" -m pytest -q --durations=15 "$@"
