"""What an evaluation runs, resolved before its first image: the model's input size, the batch size, where the
letterbox and the post-processing run (``auto`` resolved on the backend, with why it fell back to the CPU),
and which of the model's outputs is the detection head."""

from __future__ import annotations

import dataclasses
from typing import Any

from common.core.errors import UserError
from common.eval.options import EvalOptions, resolve_loaders
from common.eval.protocols import (
    Backend,
    DeviceDecoding,
    DevicePostprocessing,
    DevicePreprocessing,
    max_batch_of,
)
from common.model.yolov10 import PostprocessOptions, check_layout, detect_layout, find_head

__all__ = [
    "check_preprocess",
    "detection_head",
    "input_size",
    "resolve_batch_size",
    "resolve_postprocess",
    "resolve_preprocess",
    "with_modes",
]


def resolve_postprocess(
    backend: Backend, mode: str, layout: str | None, size: int, post: PostprocessOptions, head: int = 0
) -> tuple[str, str | None, str | None]:
    """Where post-processing runs: (``cpu`` | ``gpu``, the layout GPU post-processing was set up for,
    why ``auto`` chose cpu). ``gpu`` enables it on the backend; ``--postprocess gpu`` that can't is a
    UserError, ``auto`` falls back to cpu and says why. ``head``: the detection head's output index
    (GPU post-processing reads the first output only)."""
    if isinstance(backend, DevicePostprocessing):
        backend.disable_device_postprocess()  # a backend reused from an earlier run starts on the CPU path
    if mode == "cpu":
        return "cpu", None, None
    if head != 0:
        why = f"the detection head is output {head} of the model, and GPU post-processing reads output 0"
        if mode == "gpu":
            raise UserError(f"--postprocess gpu: {why}; use --postprocess cpu or auto")
        return "cpu", None, why
    if not isinstance(backend, DevicePostprocessing):
        if mode == "gpu":
            raise UserError(
                f"--postprocess gpu needs a backend with device output buffers (ONNX Runtime --io-binding, "
                f"TensorRT); {backend.name} returns host arrays: use --postprocess cpu or auto"
            )
        return "cpu", None, f"{backend.name} has no device post-processing"
    try:
        out = backend.outputs[0]
        chosen = layout or detect_layout(out.shape)
        check_layout(chosen, out.shape)
        backend.enable_device_postprocess(chosen, (size, size), post)
    except Exception as exc:  # auto: any reason the GPU path can't run (no GPU, no NVRTC, odd output) -> cpu
        if mode == "gpu" or not isinstance(exc, (UserError, RuntimeError, ImportError, OSError)):
            raise
        return "cpu", None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "gpu", chosen, None


def resolve_preprocess(backend: Backend, mode: str, decode: str = "cpu") -> tuple[str, str | None]:
    """Where the letterbox runs: (the mode set up on ``backend``, why ``auto`` chose cpu). ``auto``:
    gpu-letterbox on a backend with device input buffers whose kernels compile (it gives the model the same
    input as cpu, byte for byte), else cpu; with ``--decode gpu`` gpu-letterbox or a UserError. An explicit
    mode is ``check_preprocess``."""
    if mode != "auto":
        check_preprocess(backend, mode, decode)
        return mode, None
    if decode == "gpu":
        check_preprocess(backend, "gpu-letterbox", decode)
        return "gpu-letterbox", None
    if not isinstance(backend, DevicePreprocessing):
        return "cpu", f"{backend.name} takes host arrays"
    try:
        check_preprocess(backend, "gpu-letterbox", decode)
    except (UserError, RuntimeError, ImportError, OSError) as exc:  # no GPU, no NVRTC, a non-float input -> cpu
        return "cpu", (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return "gpu-letterbox", None


def check_preprocess(backend: Backend, mode: str, decode: str = "cpu") -> None:
    """UserError unless ``backend`` can run ``mode`` (and ``--decode``); GPU modes compile their kernels
    here, and ``--decode gpu`` starts each lane's decoder."""
    if decode == "gpu" and not isinstance(backend, DeviceDecoding):
        raise UserError(
            f"--decode gpu needs a backend that decodes on its GPU lanes (ONNX Runtime --io-binding, "
            f"TensorRT); {backend.name} can't: use --decode cpu"
        )
    if mode == "cpu":
        return
    if not isinstance(backend, DevicePreprocessing):
        raise UserError(
            f"--preprocess {mode} needs a backend with GPU input buffers (ONNX Runtime --io-binding, TensorRT); "
            f"{backend.name} takes host arrays: use --preprocess cpu"
        )
    backend.enable_device_preprocess(mode)
    if isinstance(backend, DeviceDecoding):
        backend.enable_device_decode(decode)


def input_size(backend: Backend, imgsz: int) -> int:
    hw = backend.input.spatial
    if hw is None:
        raise UserError(f"model input {backend.input.name} has shape {list(backend.input.shape)}; expected NCHW")
    fixed = {d for d in hw if d is not None}
    if fixed and fixed != {imgsz}:
        raise UserError(
            f"--imgsz {imgsz} does not match the model input {list(backend.input.shape)}; pass --imgsz {hw[0]}"
        )
    return imgsz


def resolve_batch_size(backend: Backend, requested: int) -> int:
    fixed = max_batch_of(backend)
    if fixed is not None and requested != fixed:
        raise UserError(
            f"--batch-size {requested}: the model's batch axis is static ({fixed}); "
            f"use --batch-size {fixed} or export the ONNX with a dynamic batch axis"
        )
    return requested


def detection_head(backend: Backend, opts: EvalOptions) -> int:
    """The index of the detection head among ``backend.outputs`` (``common.model.yolov10.find_head``)."""
    return find_head([(o.name, tuple(o.shape)) for o in backend.outputs], opts.output_format, opts.output_name)


def with_modes(backend: Backend, opts: EvalOptions, images: int) -> tuple[EvalOptions, dict[str, Any]]:
    """``opts`` with the pre-processing mode set up on ``backend`` (``resolve_preprocess``) and the loaders
    resolved for it (``resolve_loaders``), and the timings' record of what was asked and why ``auto`` fell
    back to cpu."""
    mode, why = resolve_preprocess(backend, opts.preprocess, opts.decode)
    loaders = resolve_loaders(opts.loaders, images, opts.decode, mode)
    record = {"preprocess_requested": opts.preprocess, "preprocess_fallback": why, "loaders_requested": opts.loaders}
    return dataclasses.replace(opts, preprocess=mode, loaders=loaders), record
