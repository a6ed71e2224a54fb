"""What the evaluator needs of a model: one float32 [N,3,H,W] input and a YOLOv10 detection head, checked on a
backend's input spec or on an ONNX file's graph before a session or build."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.core.cli import check_imgsz
from common.core.errors import UserError
from common.core.notes import warn
from common.model.yolov10 import find_head

__all__ = ["ALLOW_IMGSZ_FLAG", "check_export_imgsz", "check_model_input", "check_onnx_input"]

ALLOW_IMGSZ_FLAG = "--allow-imgsz-mismatch"


def check_model_input(label: str, name: str, shape: Sequence[Any], dtype: Any, imgsz: int) -> None:
    """What the evaluator feeds: one float32 [N,3,H,W] tensor (RGB, /255). UserError saying so otherwise."""
    need = "one float32 input [N,3,H,W] (RGB scaled to [0,1]); export the model with such an input"
    dims = list(shape)
    if np.dtype(dtype) != np.float32:
        raise UserError(f"{label}: input {name!r} is {np.dtype(dtype)} {dims}; the evaluator needs {need}")
    if len(dims) != 4 or dims[1] not in (3, None):
        raise UserError(f"{label}: input {name!r} has shape {dims}; the evaluator needs {need}")
    hw = {d for d in dims[2:] if d is not None}
    fixed = hw.pop() if len(hw) == 1 and None not in dims[2:] else None
    if fixed is not None and imgsz != fixed:
        raise UserError(f"--imgsz {imgsz} does not match {label}'s input {dims}; pass --imgsz {fixed}")
    check_imgsz("--imgsz", imgsz, fixed)


def check_onnx_input(
    flag: str,
    path: Path,
    imgsz: int,
    *,
    output_format: str = "auto",
    output_name: str | None = None,
    allow_imgsz_mismatch: bool = False,
) -> None:
    """What the evaluator needs of an ONNX file, read from its graph (cheap: no weights loaded) before a
    session or build: ``check_model_input`` on its input, its detection head among its outputs
    (``find_head``), and ``--imgsz`` against the size it was exported at (``check_export_imgsz``)."""
    if path.suffix != ".onnx" or not path.is_file():
        return  # the backend reports a missing/foreign file with its own message
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{flag} {path} is not a readable ONNX model ({first})") from None
    _check_onnx_graph_input(flag, path, model, imgsz)
    outputs = [(o.name, _dims(o)) for o in model.graph.output]
    head = find_head(outputs, output_format, output_name)
    if len(outputs) > 1 and output_name is None:
        warn(
            f"{flag} {path} has {len(outputs)} outputs; evaluating {outputs[head][0]} {list(outputs[head][1])}, the "
            "one shaped like a YOLOv10 detection head (--output-name NAME chooses another)"
        )
    meta = {p.key: p.value for p in model.metadata_props}
    check_export_imgsz(f"{flag} {path}", imgsz, meta.get("imgsz"), allow_imgsz_mismatch)


def _dims(value_info: Any) -> list[int | None]:
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in value_info.type.tensor_type.shape.dim
    ]


def check_export_imgsz(label: str, imgsz: int, recorded: str | None, allow: bool = False) -> None:
    """``--imgsz`` against the square size the model was exported at (Ultralytics writes ``imgsz`` into the
    ONNX metadata, e.g. ``[640, 640]``): a UserError naming both, unless ``allow`` (then a warning)."""
    try:
        value = json.loads(recorded) if recorded else None
    except ValueError:
        return
    sizes = value if isinstance(value, list) else [value, value]
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or not all(isinstance(v, int) and v > 0 for v in sizes) or sizes[0] != sizes[1]:
        return  # absent, or not a square size this evaluator runs at
    if imgsz == sizes[0]:
        return
    what = f"--imgsz {imgsz} differs from the size {label} was exported at ({sizes[0]}, ONNX metadata imgsz {recorded})"
    if not allow:
        raise UserError(f"{what}; pass --imgsz {sizes[0]}, or {ALLOW_IMGSZ_FLAG} to evaluate at {imgsz} knowingly")
    warn(f"{what}: evaluating at {imgsz} as {ALLOW_IMGSZ_FLAG} asks; the mAP is that of another input size")


def _check_onnx_graph_input(flag: str, path: Path, model: Any, imgsz: int) -> None:
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"{flag} {path} has {len(inputs)} inputs; a YOLO model has one float32 [N,3,H,W] input")
    vi = inputs[0]
    tt = vi.type.tensor_type
    dims = _dims(vi)
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
    except (KeyError, ValueError, TypeError):
        dtype = np.dtype("V")
    check_model_input(f"{flag} {path}", vi.name, dims, dtype, imgsz)
