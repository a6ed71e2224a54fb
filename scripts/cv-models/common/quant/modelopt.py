"""The ModelOpt calls: AutoCast (fp16/bf16) and ONNX PTQ (int8/fp8). Import only in the quant environment.

ModelOpt (``nvidia-modelopt[onnx]``) pulls ``onnxruntime-gpu``, which must never share an
environment with ``onnxruntime``; it lives in its own venv (``.venv-quant``) / Pixi environment
(``quant``). Everything that does not need ModelOpt is in ``common.quant.presets``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError

__all__ = [
    "AUTOCAST_REF_IMAGES",
    "MODELOPT_REQUIREMENT",
    "check_nvfp4_supported",
    "default_calibration_eps",
    "import_modelopt",
    "modelopt_version",
    "onnx_ptq_modes",
    "run_autocast",
    "run_ptq",
]

log = logging.getLogger(__name__)
logging.getLogger("modelopt").propagate = False  # ModelOpt logs through its own handler

# AutoCast only needs activation ranges to keep overflowing nodes in FP32: a few images suffice.
AUTOCAST_REF_IMAGES = 8
MODELOPT_REQUIREMENT = "nvidia-modelopt[onnx]>=0.47,<0.48"


def import_modelopt() -> Any:
    try:
        import modelopt
        import modelopt.onnx
    except ImportError as exc:
        raise UserError(
            f"ModelOpt is not installed in this environment ({exc}); run quantization in its own environment: "
            "`pixi run -e quant quantize ...` or `bash scripts/dev/setup-quant-venv.sh` then "
            "`.venv-quant/bin/python scripts/cv-models/quantize_onnx.py ...`"
        ) from exc
    return modelopt


def modelopt_version() -> str:
    return str(import_modelopt().__version__)


def onnx_ptq_modes() -> list[str]:
    """The ``--quantize_mode`` choices of the installed ModelOpt ONNX PTQ CLI (e.g. ['fp8', 'int8', 'int4'])."""
    import_modelopt()
    from modelopt.onnx.quantization.__main__ import get_parser

    for action in get_parser()._actions:
        if "--quantize_mode" in action.option_strings:
            return list(action.choices or [])
    return []


def check_nvfp4_supported() -> None:
    """UserError unless the installed ModelOpt's ONNX PTQ offers NVFP4 (0.47 does not)."""
    modes = onnx_ptq_modes()
    if any("nvfp4" in m.lower() or "fp4" in m.lower() for m in modes):
        return
    raise UserError(
        f"--mode nvfp4: ModelOpt {modelopt_version()} ONNX PTQ offers only {', '.join(modes)}; NVFP4 is not "
        "available on the ONNX route. Its supported route is ModelOpt's PyTorch quantization "
        "(modelopt.torch.quantization, NVFP4 config) exported to ONNX, and the result runs only on a Blackwell GPU "
        "(e.g. RTX 5090). Use --mode fp8 or --mode int8 here"
    )


def default_calibration_eps() -> list[str]:
    """``cuda:0 cpu`` when an NVIDIA GPU device node exists and ORT has the CUDA EP, else ``cpu``."""
    try:
        import onnxruntime as ort

        has_cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        has_cuda_ep = False
    return ["cuda:0", "cpu"] if has_cuda_ep and os.path.exists("/dev/nvidiactl") else ["cpu"]


@contextlib.contextmanager
def _workdir(onnx_path: Path) -> Iterator[Path]:
    """A private copy of the input model: ModelOpt writes intermediate files beside its input."""
    d = Path(tempfile.mkdtemp(prefix="quantize-"))
    try:
        copy = d / onnx_path.name
        shutil.copy2(onnx_path, copy)
        data = onnx_path.with_name(onnx_path.name + ".data")
        if data.exists():
            shutil.copy2(data, d / data.name)
        yield copy
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _log_level(verbose: bool) -> str:
    return "INFO" if verbose else "WARNING"


def run_autocast(
    onnx_path: Path,
    out_path: Path,
    low_precision_type: str,
    calib: np.ndarray | None,
    input_name: str,
    nodes_to_exclude: Sequence[str],
    op_types_to_exclude: Sequence[str],
    providers: Sequence[str],
    verbose: bool = False,
) -> dict[str, Any]:
    """AutoCast to fp16/bf16 with float32 I/O (keep_io_types); writes ``out_path``."""
    import_modelopt()
    import onnx
    from modelopt.onnx.autocast import convert_to_mixed_precision
    from modelopt.onnx.autocast.logging_config import configure_logging

    configure_logging(_log_level(verbose))
    with _workdir(onnx_path) as src:
        ref = None
        used = 0
        if calib is not None:
            used = min(AUTOCAST_REF_IMAGES, calib.shape[0])
            ref = str(src.with_name("autocast_ref.npz"))
            np.savez(ref, **{input_name: np.ascontiguousarray(calib[:used])})
        model = convert_to_mixed_precision(
            onnx_path=str(src),
            low_precision_type=low_precision_type,
            nodes_to_exclude=list(nodes_to_exclude) or None,
            op_types_to_exclude=list(op_types_to_exclude) or None,
            keep_io_types=True,
            calibration_data=ref,
            providers=list(providers),
        )
        onnx.save(model, str(out_path))
    return {"autocast_reference_images": used, "keep_io_types": True}


def run_ptq(
    onnx_path: Path,
    out_path: Path,
    mode: str,
    calib: np.ndarray,
    input_name: str,
    calibration_method: str,
    calibration_eps: Sequence[str],
    nodes_to_exclude: Sequence[str],
    op_types_to_exclude: Sequence[str],
    high_precision_dtype: str,
    verbose: bool = False,
    calibration_cache: Path | None = None,
) -> dict[str, Any]:
    """ModelOpt ONNX PTQ (int8/fp8) with an in-memory calibration array; writes ``out_path``.

    ``calibration_cache`` (int8): activation scales in the TensorRT calibration-cache format; ModelOpt
    quantizes only tensors the cache names and overwrites their calibrated scales with the cached ones.
    """
    import_modelopt()
    from modelopt.onnx.quantization import quantize

    with _workdir(onnx_path) as src:
        tmp_out = src.with_name(out_path.name)
        quantize(
            onnx_path=str(src),
            quantize_mode=mode,
            calibration_data={input_name: np.ascontiguousarray(calib)},
            calibration_method=calibration_method,
            calibration_eps=list(calibration_eps),
            nodes_to_exclude=list(nodes_to_exclude) or None,
            op_types_to_exclude=list(op_types_to_exclude) or None,
            high_precision_dtype=high_precision_dtype,
            calibration_cache_path=str(calibration_cache) if calibration_cache else None,
            output_path=str(tmp_out),
            log_level=_log_level(verbose),
        )
        if not tmp_out.is_file():
            raise UserError(f"ModelOpt wrote no output for --mode {mode}; rerun with --verbose to see its log")
        shutil.move(str(tmp_out), out_path)
    return {}
