"""The environment of a Python child process started as ``python -m common...`` (a loader, a COCO evaluation
worker, the ModelOpt worker): this process's environment with the folder holding ``common`` first on
``PYTHONPATH``, so the child imports the same code whatever its working directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SCRIPTS_DIR", "child_env"]

SCRIPTS_DIR = Path(__file__).resolve().parents[2]  # scripts/cv-models, the folder holding ``common``


def child_env(defaults: Mapping[str, str] | None = None, **force: str) -> dict[str, str]:
    """This process's environment for a child: ``defaults`` where the environment does not set them,
    ``force`` over it, and ``SCRIPTS_DIR`` first on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(SCRIPTS_DIR), os.environ.get("PYTHONPATH")) if p)
    return {**(defaults or {}), **os.environ, **force, "PYTHONPATH": path}
