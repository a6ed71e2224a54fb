"""The evaluation's option vocabulary: the choices each mode flag takes, and the checks of how they combine.

Each check lives here once; the CLI edge and the evaluation loop call it.
"""

from __future__ import annotations

import os

from common.core.errors import UserError

__all__ = [
    "DECODES",
    "GPU_ORDERS",
    "LOADERS",
    "POSTPROCESS_MODES",
    "PREPROCESS_MODES",
    "check_choice",
    "check_decode",
    "check_loaders",
]

# cpu: OpenCV letterbox + normalise in the loaders (the reference pixels); gpu-normalize: OpenCV letterbox,
# normalised on the GPU; gpu-letterbox: decoded images letterboxed and normalised on the GPU.
PREPROCESS_MODES: tuple[str, ...] = ("cpu", "gpu-normalize", "gpu-letterbox")
DECODES: tuple[str, ...] = ("cpu", "gpu")  # JPEG decoding: OpenCV in the loaders | nvImageCodec on the lanes
LOADERS: tuple[str, ...] = ("threads", "processes")
POSTPROCESS_MODES: tuple[str, ...] = ("auto", "cpu", "gpu")
GPU_ORDERS: tuple[str, ...] = ("auto", "serial", "overlap")


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    """UserError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UserError(f"{flag} {value}: choose one of {', '.join(choices)}")


def check_decode(decode: str, preprocess: str) -> None:
    """UserError for a ``--decode`` the ``--preprocess`` mode can't take (flags only; the backend is asked
    separately)."""
    check_choice("--decode", decode, DECODES)
    if decode == "gpu" and preprocess != "gpu-letterbox":
        raise UserError(
            f"--decode gpu needs --preprocess gpu-letterbox (the lanes letterbox the decoded images), not {preprocess}"
        )


def check_loaders(loaders: str, decode: str = "cpu") -> None:
    """UserError unless ``--loaders`` can run here with ``--decode``."""
    check_choice("--loaders", loaders, LOADERS)
    if loaders == "processes":
        if not hasattr(os, "memfd_create"):
            raise UserError("--loaders processes needs Linux (os.memfd_create); use --loaders threads")
        if decode != "cpu":
            raise UserError(
                "--loaders processes decodes with OpenCV; with --decode gpu the lanes decode and the "
                "loaders only read files: use --loaders threads"
            )
