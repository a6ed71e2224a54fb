"""The error types that CLIs turn into a one-line message: ``UserError`` (exit 2), ``RunError`` (exit 1)."""

from __future__ import annotations

__all__ = [
    "RunError",
    "UserError",
]


class UserError(Exception):
    """Bad input from the user (a missing file, a wrong flag, a model we cannot read).

    The message must name the file or flag and say what to do; ``common.core.cli.run_main``
    prints it on one line as ``error: <message>`` and exits with code 2.
    """


class RunError(Exception):
    """A run that failed on a correct command line (a TensorRT or CUDA call reported an error).

    The message names the call and the library's own last error; ``common.core.cli.run_main`` prints it on
    one line as ``error: <message>`` (the traceback with ``--verbose``) and exits with code 1.
    """
