"""The error types that CLIs turn into a one-line message: ``UserError`` (exit 2), ``RunError`` (exit 1)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = [
    "OptionError",
    "RunError",
    "UserError",
    "literal",
    "param_flag",
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


def param_flag(param: str) -> str:
    """The command-line flag of an option parameter: ``max_det`` -> ``--max-det``."""
    return "--" + param.replace("_", "-")


class OptionError(UserError):
    """A bad option value, said in the library's parameter names.

    ``template`` names parameters as ``{param}`` fields, e.g. ``"{decode} gpu needs {preprocess} gpu-letterbox"``.
    ``str()`` gives the parameter names (``decode``); the CLI edge renders it with the flag names
    (``render(flag_of)``, by default ``--decode``).
    """

    def __init__(self, param: str, template: str) -> None:
        self.param = param
        self.template = template
        super().__init__(self.render(str))

    def render(self, name_of: Callable[[str], str] = param_flag) -> str:
        class Names(dict):
            def __missing__(self, key: str) -> str:
                return name_of(key)

        return self.template.format_map(Names())


def literal(value: object) -> str:
    """``value`` as text for an ``OptionError`` template (braces escaped)."""
    return str(value).replace("{", "{{").replace("}", "}}")
