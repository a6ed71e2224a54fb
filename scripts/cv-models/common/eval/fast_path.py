"""Which ONNX Runtime path ``eval-onnx`` runs when its flags leave the choice to ``auto``.

The fastest path that gives the reference's detections needs a CUDA device and ONNX Runtime's CUDA EP:
IO-binding lanes (our device buffers, one session per lane on its own stream), the letterbox on the
GPU and post-processing on the GPU. ``resolve_io_binding`` decides the first from the flags and what this
machine offers (``GpuFacts``); the evaluation loop resolves ``--preprocess auto`` and ``--postprocess auto``
against the backend it is given. A machine without the CUDA EP or without a CUDA device keeps the plain
session. Explicit flags always win; an explicit combination that can't run is a one-line UserError.

``fast_path_record`` is what metrics.json ``run.fast_path`` holds: each choice, what was asked and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from common.core.errors import UserError

__all__ = [
    "CUDA_EP",
    "IO_BINDING_MODES",
    "GpuFacts",
    "OrtPath",
    "cuda_device_count",
    "fast_path_record",
    "probe_gpu",
    "resolve_io_binding",
]

CUDA_EP = "CUDAExecutionProvider"
IO_BINDING_MODES: tuple[str, ...] = ("auto", "on", "off")


@dataclass(frozen=True)
class GpuFacts:
    """What this machine offers the fast path: ONNX Runtime's CUDA EP, and how many CUDA devices the CUDA
    runtime sees (0: none, or no cuda-python to drive them)."""

    cuda_ep: bool
    cuda_devices: int


@dataclass(frozen=True)
class OrtPath:
    """The resolved ONNX Runtime path: IO-binding lanes or a plain session, on these providers, and why."""

    io_binding: bool
    providers: tuple[str, ...]
    requested: str
    why: str


def cuda_device_count() -> int:
    """CUDA devices the CUDA runtime sees; 0 without cuda-python or a driver (never raises)."""
    try:
        from cuda.bindings import runtime

        err, count = runtime.cudaGetDeviceCount()
        return int(count) if int(err) == 0 else 0
    except Exception:  # no cuda-python, no driver, a broken install: no device for the fast path
        return 0


def probe_gpu(available: Sequence[str]) -> GpuFacts:
    """``GpuFacts`` from ONNX Runtime's available providers and the CUDA runtime (asked only when the CUDA EP
    is there)."""
    cuda_ep = CUDA_EP in available
    return GpuFacts(cuda_ep, cuda_device_count() if cuda_ep else 0)


def resolve_io_binding(
    mode: str,
    providers: Sequence[str],
    providers_given: bool,
    facts: GpuFacts,
    plain_settings: Sequence[str] = (),
) -> OrtPath:
    """``--io-binding MODE`` -> ``OrtPath``.

    ``providers_given``: the user named ``--providers`` (else ``providers`` is the default list, which
    IO-binding lanes replace by the CUDA EP alone). ``plain_settings``: settings given that only a plain
    session uses (e.g. ``--intra-op-threads``, options for another EP); ``auto`` then keeps the plain session.
    ``on`` with providers the lanes can't drive is a UserError; ``auto`` takes the lanes only with the CUDA EP
    and a CUDA device."""
    if mode not in IO_BINDING_MODES:
        raise UserError(f"--io-binding {mode}: choose one of {', '.join(IO_BINDING_MODES)}")
    given = tuple(providers)
    if mode == "off":
        return OrtPath(False, given, mode, "--io-binding off")
    leads_cuda = bool(given) and given[0] == CUDA_EP
    if mode == "on":
        if providers_given and not leads_cuda:
            raise UserError("--io-binding drives the CUDA EP: put CUDAExecutionProvider first in --providers")
        return OrtPath(True, (CUDA_EP,), mode, "--io-binding on")
    if providers_given and not leads_cuda:
        return OrtPath(False, given, mode, f"--providers leads with {given[0] if given else 'nothing'}")
    if plain_settings:
        return OrtPath(False, given, mode, f"plain-session settings given: {', '.join(plain_settings)}")
    if not facts.cuda_ep:
        return OrtPath(False, given, mode, f"this ONNX Runtime offers no {CUDA_EP}")
    if facts.cuda_devices < 1:
        return OrtPath(False, given, mode, "no CUDA device (or no cuda-python) on this machine")
    return OrtPath(True, (CUDA_EP,), mode, f"{CUDA_EP} and a CUDA device are here")


def fast_path_record(path: OrtPath, timings: dict[str, Any]) -> dict[str, Any]:
    """metrics.json ``run.fast_path``: the backend path, pre- and post-processing as they ran, what was asked
    and why (``timings``: the evaluation's, which say how ``auto`` resolved pre- and post-processing)."""
    return {
        "io_binding": path.io_binding,
        "io_binding_requested": path.requested,
        "io_binding_why": path.why,
        "providers": list(path.providers),
        "preprocess": timings.get("preprocess_mode"),
        "preprocess_requested": timings.get("preprocess_requested"),
        "preprocess_fallback": timings.get("preprocess_fallback"),
        "postprocess": timings.get("postprocess_mode"),
        "postprocess_requested": timings.get("postprocess_requested"),
        "postprocess_fallback": timings.get("postprocess_fallback"),
    }
