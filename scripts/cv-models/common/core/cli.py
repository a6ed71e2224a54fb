"""The CLI contract shared by every script.

``run_main(main)`` runs a script's ``main(argv) -> int``:

- ``UserError`` -> ``error: <message>`` on one line to stderr, exit code 2, no traceback
  (``--verbose`` anywhere on the command line shows it);
- an ``OptionError`` (a bad option value, said in parameter names) is shown with the flags
  (``max_det`` -> ``--max-det``);
- Ctrl-C -> exit code 130;
- a full disk (an ``OSError`` while writing that no atomic writer turned into a ``UserError``) -> one line, 2;
- exit code 3 (``EXIT_INCONCLUSIVE``): a comparison that could not be made (compare_runs, validate_e2e).

Whatever the outcome, the outputs the run claimed are released (``common.core.results.release_outputs``).

Parsers made by ``make_parser`` report a bad flag (argparse's own errors) on one line too:
``error: argument --conf: invalid float value: 'x' (see --help)``, exit code 2.
``check_range`` is the one range check of numeric flags.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from common.core import notes
from common.core.checks import range_problem
from common.core.errors import OptionError, RunError, UserError, param_flag
from common.core.results import release_outputs

__all__ = [
    "EXIT_INCONCLUSIVE",
    "EXIT_USAGE",
    "FORCE_HELP",
    "OneLineParser",
    "add_force_flag",
    "add_old_spelling",
    "add_verbose_flag",
    "check_imgsz",
    "check_range",
    "example_epilog",
    "make_parser",
    "output_file",
    "run_main",
    "setup_logging",
]

EXIT_USAGE = 2
# compare_runs / validate_e2e: the runs could not be compared (different images, the candidate is the
# baseline, nothing compared): neither a pass nor a failure
EXIT_INCONCLUSIVE = 3
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks on errors")


FORCE_HELP = "replace existing output files that this toolkit did not write (default: refuse them)"


def add_force_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)


def add_old_spelling(parser: argparse.ArgumentParser | argparse._ArgumentGroup, old: str, new: argparse.Action) -> None:
    """Accept ``old``, a flag's previous name, as a hidden alias of ``new`` (the action of its current name):
    the same destination, type, choices and arity, left out of --help (command lines written for the old name
    keep working)."""
    kwargs: dict = {"dest": new.dest, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
    if isinstance(new, argparse._StoreTrueAction):
        kwargs["action"] = "store_true"
    elif isinstance(new, argparse._AppendAction):
        kwargs.update(action="append", type=new.type, choices=new.choices, metavar=new.metavar)
    else:
        kwargs.update(type=new.type, choices=new.choices, nargs=new.nargs, metavar=new.metavar)
    parser.add_argument(old, **kwargs)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )


def example_epilog(*commands: str) -> str:
    """An argparse epilog listing example command lines (shown by --help)."""
    return "examples:\n" + "\n".join(f"  {c}" for c in commands)


class OneLineParser(argparse.ArgumentParser):
    """argparse with the CLI contract: a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"error: {message} (see --help)\n")


def make_parser(description: str, examples: Sequence[str], usage: str | None = None) -> argparse.ArgumentParser:
    """``usage``: a short usage line (default: argparse's, every flag)."""
    parser = OneLineParser(
        usage=usage,
        description=description,
        epilog=example_epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_verbose_flag(parser)
    return parser


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    notes.reset()
    try:
        return int(main(args) or 0)
    except UserError as exc:
        if verbose:
            raise
        message = exc.render(param_flag) if isinstance(exc, OptionError) else str(exc)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except RunError as exc:
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a write that failed outside the atomic writers (a log file on a full disk)
        if verbose or exc.errno not in _WRITE_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"error: cannot write{where}: {exc.strerror or exc}; free some space or choose another location",
            file=sys.stderr,
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        release_outputs()


def output_file(default_name: str | None = None, what: str = "file") -> Callable[[str], Path]:
    """An argparse ``type`` for an output file path: a value ending in ``/`` names a folder, so it becomes
    ``<folder>/<default_name>`` (never a file named like the folder); without a default name it is refused."""

    def parse(value: str) -> Path:
        if value.endswith(("/", os.sep)):
            if default_name is None:
                raise argparse.ArgumentTypeError(
                    f"{value!r} ends in '/', a folder; give the {what}'s own path (e.g. {value}NAME)"
                )
            return Path(value) / default_name
        return Path(value)

    parse.__name__ = "path"  # argparse names the type in its error message
    return parse


def check_range(
    flag: str,
    value: float | int | None,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """UserError unless ``value`` is a finite number in the interval (None: flag not given, fine).

    ``lo_open`` / ``hi_open`` exclude the bound: ``check_range("--iou", v, 0, 1, lo_open=True)`` is (0, 1].
    """
    if value is None:
        return
    problem = range_problem(value, lo, hi, lo_open=lo_open, hi_open=hi_open)
    if problem is not None:
        raise UserError(f"{flag} {problem}")


def check_imgsz(flag: str, value: int, fixed: int | None = None) -> None:
    """A network input size: a positive multiple of 32 (the YOLO stride), or the model's fixed size."""
    if fixed is not None and value == fixed:
        return
    if value <= 0 or value % 32:
        extra = f" or the model's fixed size {fixed}" if fixed else ""
        raise UserError(f"{flag} must be a positive multiple of 32{extra}, got {value}")
