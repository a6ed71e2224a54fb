"""The CLI contract shared by every script.

``run_main(main)`` runs a script's ``main(argv) -> int``:

- ``UserError`` -> ``error: <message>`` on one line to stderr, exit code 2, no traceback
  (``--verbose`` anywhere on the command line shows it);
- Ctrl-C -> exit code 130.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from common.errors import UserError

EXIT_USAGE = 2


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks on errors")


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )


def example_epilog(*commands: str) -> str:
    """An argparse epilog listing example command lines (shown by --help)."""
    return "examples:\n" + "\n".join(f"  {c}" for c in commands)


def make_parser(description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description,
        epilog=example_epilog(*examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_verbose_flag(parser)
    return parser


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    try:
        return int(main(args) or 0)
    except UserError as exc:
        if verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
