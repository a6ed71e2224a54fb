"""A variant's mode: its ``--preprocess``, plus ``+gpu-post`` when the backend post-processes on the GPU,
``+gpu-decode`` when its lanes decode the JPEGs (``--decode gpu``, nvImageCodec) and ``+procs`` when the loaders
are processes (``--loaders processes``); ``auto`` is the evaluator's defaults."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

from common.core.errors import UserError
from common.eval.modes import check_preprocess
from common.eval.pipeline import EvalOptions
from common.eval.protocols import Backend

__all__ = ["DEFAULTS_MODE", "HAS_GPU_DECODE", "HAS_GPU_POST", "MODE_FLAGS", "enable_mode", "eval_options", "mode_parts"]

HAS_GPU_POST = "postprocess" in {f.name for f in dataclasses.fields(EvalOptions)}
HAS_GPU_DECODE = importlib.util.find_spec("nvidia") is not None and bool(importlib.util.find_spec("nvidia.nvimgcodec"))
MODE_FLAGS = ("gpu-post", "gpu-decode", "procs")
DEFAULTS_MODE = "auto"  # the evaluator's defaults: --preprocess auto, --postprocess auto, --loaders auto, cpu decode


def mode_parts(mode: str) -> tuple[str, bool, str, str]:
    """``PREPROCESS[+gpu-post][+gpu-decode][+procs]`` -> (--preprocess, GPU post-processing?, --decode,
    --loaders); ``auto``: the evaluator's defaults (post-processing ``auto``)."""
    prep, *flags = mode.split("+")
    if any(f not in MODE_FLAGS for f in flags) or len(set(flags)) != len(flags):
        raise UserError(f"variant mode {mode!r}: expected PREPROCESS[+gpu-post][+gpu-decode][+procs]")
    loaders = "processes" if "procs" in flags else "auto" if mode == DEFAULTS_MODE else "threads"
    return prep, "gpu-post" in flags, "gpu" if "gpu-decode" in flags else "cpu", loaders


def eval_options(mode: str, **kw: Any) -> EvalOptions:
    """EvalOptions for a variant mode (``mode_parts``; post-processing on the CPU unless +gpu-post)."""
    prep, post, decode, loaders = mode_parts(mode)
    if HAS_GPU_POST:
        kw["postprocess"] = "auto" if mode == DEFAULTS_MODE else "gpu" if post else "cpu"
    elif post:
        raise UserError(f"variant mode {mode!r}: this evaluator has no GPU post-processing")
    return EvalOptions(preprocess=prep, decode=decode, loaders=loaders, **kw)


def enable_mode(backend: Backend, mode: str) -> None:
    """Set ``backend`` up for a variant mode's pre-processing and decoding (UserError if it can't)."""
    prep, _, decode, _ = mode_parts(mode)
    if mode != DEFAULTS_MODE:  # auto resolves in the evaluation, as eval-onnx's does
        check_preprocess(backend, prep, decode)
