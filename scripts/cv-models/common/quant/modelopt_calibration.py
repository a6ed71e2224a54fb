"""The references a precision search makes with ModelOpt (through its worker): the calibrations of the
sweep and the FP16 (AutoCast) model.

An INT8 calibration is one ModelOpt run of INT8-all on the chosen images with the chosen method; its
activation scales are kept as a calibration cache (``calibration/<method>-<images>.cache``) that every
candidate of the search reuses. FP8 calibrations keep no cache (ModelOpt 0.47 ignores it for FP8).
Both are made once per run folder, so a resumed search finds them.

``int8_all_models`` writes each calibration's INT8-all (FP8-all) model beside its cache
(``calibration/<name>.onnx``): what a search on a machine without ModelOpt takes as ``--int8-onnx``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.quant.calib import load_calib_tensor
from common.quant.candidates import Calibration, ModelOptMaker
from common.quant.qdq_graph import activation_scales, write_calibration_cache

__all__ = ["calibrations", "int8_all_models", "make_fp16"]


def calibrations(
    worker: Any,
    source: Path,
    calib: Path,
    mode: str,
    sweep: Sequence[tuple[str, int]],
    eps: Sequence[str],
    folder: Path,
) -> list[Calibration]:
    """One ``Calibration`` per (method, images) of the sweep; images 0 means the whole tensor."""
    import onnx

    total = load_calib_tensor(calib).shape[0]
    out = []
    for method, count in sweep:
        n = count or total
        name = f"{method}-{n}"
        if mode != "int8":
            out.append(Calibration(name, method, n, calib))
            continue
        cache = folder / "calibration" / f"{name}.cache"
        if not cache.is_file():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = folder / "calibration" / f"{name}.onnx"
            worker.call(
                "ptq",
                src=str(source.resolve()),
                out=str(tmp.resolve()),
                mode=mode,
                calib=str(calib.resolve()),
                calib_count=n,
                method=method,
                eps=list(eps),
                nodes_to_exclude=[],
                high_precision_dtype="fp32",
                cache=None,
            )
            write_calibration_cache(activation_scales(onnx.load(str(tmp), load_external_data=False)), cache)
            tmp.unlink(missing_ok=True)
        out.append(Calibration(name, method, n, calib, cache))
    return out


def make_fp16(worker: Any, source: Path, calib: Path | None, eps: Sequence[str], folder: Path) -> Path:
    """The FP16 reference (ModelOpt AutoCast, float32 I/O), made once per run folder."""
    path = folder / "references" / "fp16.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".fp16.tmp.onnx")
        worker.call(
            "autocast",
            src=str(source.resolve()),
            out=str(tmp.resolve()),
            mode="fp16",
            calib=str(calib.resolve()) if calib else None,
            eps=list(eps),
        )
        tmp.replace(path)
    return path


def int8_all_models(
    worker: Any,
    source: Path,
    mode: str,
    cals: Sequence[Calibration],
    high_precision_dtype: str,
    eps: Sequence[str],
    batch: int,
    folder: Path,
) -> list[Path]:
    """Each calibration's INT8-all (FP8-all) as the search makes it (``ModelOptMaker`` with nothing
    excluded), written once to ``calibration/<name>.onnx``, beside ``calibration/<name>.cache``."""
    out = []
    for cal in cals:
        path = folder / "calibration" / f"{cal.name}.onnx"
        if not path.is_file():
            ModelOptMaker(worker, source, mode, cal, high_precision_dtype, eps, batch).make([], path)
        out.append(path)
    return out
