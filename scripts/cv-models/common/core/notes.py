"""Run warnings: each printed once on stderr as ``warning: ...`` and kept, so that the run's report
(metrics.json ``warnings``) lists every one of them.

``common.core.cli.run_main`` starts every CLI run with an empty list.
"""

from __future__ import annotations

import sys

__all__ = ["collected", "reset", "warn"]

_SEEN: list[str] = []


def warn(message: str) -> str:
    """Print ``warning: <message>`` on stderr (once per distinct message) and keep it; returns it."""
    if message not in _SEEN:
        _SEEN.append(message)
        print(f"warning: {message}", file=sys.stderr)
    return message


def collected() -> list[str]:
    """The warnings of this run so far, in the order they were first given."""
    return list(_SEEN)


def reset() -> None:
    _SEEN.clear()
