"""One line instead of a traceback when a script runs on a Python that lacks the toolkit's dependencies.

Every script imports this module first (it needs the standard library only): from then on an uncaught
``ModuleNotFoundError`` -- ``import numpy`` on a bare system Python, even for ``--help`` -- prints which
command sets the environment up and runs the script through it, and the script exits with code 2.
Any other exception goes to the previous ``sys.excepthook`` unchanged.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["install", "setup_hint"]

# the scripts that need another environment than the default one (scripts/dev/venv.sh jobs)
_JOBS = {"quantize_onnx.py": "python-quant"}


def setup_hint(script: str, missing: str) -> str:
    """The one line: what is missing, and the commands (pip venv, Pixi) that run ``script`` with it."""
    job = _JOBS.get(os.path.basename(script), "python")
    pixi = "pixi run -e quant python" if job == "python-quant" else "pixi run python"
    return (
        f"error: this Python ({sys.executable}) lacks the toolkit's dependencies (no module named {missing!r}); "
        f"run the script in its environment: bash scripts/dev/venv.sh {job} {script} ... (sets it up), or "
        f"{pixi} {script} ..."
    )


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    name = getattr(exc, "name", None) or ""
    if issubclass(kind, ModuleNotFoundError) and name:
        script = sys.argv[0] if sys.argv and sys.argv[0] else "SCRIPT.py"
        sys.stdout.flush()
        print(setup_hint(script, name.split(".")[0]), file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    _previous(kind, exc, tb)


_previous = sys.excepthook


def install() -> None:
    """Route uncaught ``ModuleNotFoundError`` to the one-line hint (idempotent)."""
    if sys.excepthook is not _hook:
        sys.excepthook = _hook


install()
