"""The error type that CLIs turn into a one-line message and exit code 2."""

from __future__ import annotations

__all__ = [
    "UserError",
]


class UserError(Exception):
    """Bad input from the user (a missing file, a wrong flag, a model we cannot read).

    The message must name the file or flag and say what to do; ``common.core.cli.run_main``
    prints it on one line as ``error: <message>`` and exits with code 2.
    """
