"""One ONNX precision candidate (``quantize_onnx.py``): the cheap checks and reads first (``plan``), then
ModelOpt's conversion written atomically and checked (``convert``), then the record of it (``sidecar``).
ModelOpt comes in as ``qm`` (``common.quant.modelopt``), imported by the caller once the cheap checks passed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.core.errors import UserError
from common.core.results import atomic_output, sha256_file
from common.quant import presets as quant
from common.quant.calib import load_calib_tensor, read_calib_record

__all__ = ["SIDECAR_SCHEMA", "Conversion", "Plan", "QuantizeOptions", "check_options", "convert", "plan", "sidecar"]

SIDECAR_SCHEMA = 1


@dataclass(frozen=True)
class QuantizeOptions:
    """A conversion as the flags ask for it: ``calibration_method`` None (entropy for int8, max for fp8),
    ``calibration_eps`` empty (ModelOpt's default for this machine) and ``preset`` None (the mode's default)
    are chosen in ``plan``; ``verbose`` lets ModelOpt's own tracebacks through."""

    mode: str
    onnx_path: Path
    out: Path
    calib: Path | None = None
    calibration_method: str | None = None
    calibration_eps: tuple[str, ...] = ()
    preset: str | None = None
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    high_precision_dtype: str = "fp16"
    verbose: bool = False


@dataclass
class Plan:
    """What the cheap checks decided, before ModelOpt is imported."""

    input_name: str
    preset: str
    excl: quant.Exclusions
    calib: Any  # the calibration tensor, or None
    eps: list[str]
    method: str


@dataclass
class Conversion:
    """What ModelOpt made: its own record (``extra``), its seconds, the Q/DQ counts and the model's I/O types."""

    extra: dict[str, Any]
    seconds: float
    stats: dict[str, Any]
    io: dict[str, str]


def check_options(opts: QuantizeOptions) -> None:
    """The flags' values and the source's existence (UserError naming the flag), before anything is read."""
    src, out = opts.onnx_path, opts.out
    if not src.is_file():
        raise UserError(f"--onnx-path {src} not found")
    if out.suffix != ".onnx":
        raise UserError(f"--out must end in .onnx, got {out}")
    if out.resolve() == src.resolve():
        raise UserError("--out must differ from --onnx-path")
    if opts.mode in quant.AUTOCAST_MODES and opts.calibration_method:
        raise UserError(f"--calibration-method applies to int8/fp8, not --mode {opts.mode}")
    if opts.mode in quant.PTQ_MODES and not opts.calib:
        raise UserError(f"--mode {opts.mode} needs --calib: build one with make_calib_npy.py (about 100 images)")


def plan(opts: QuantizeOptions, qm: Any) -> Plan:
    """Read the source graph once: its input, the exclusions of the preset, the calibration tensor."""
    import onnx

    src = opts.onnx_path
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as exc:
        raise UserError(f"--onnx-path {src} is not a readable ONNX model: {exc}") from exc
    input_name, in_shape = quant.input_spec(model)
    if quant.graph_stats(model)["quantize_linear"]:
        raise UserError(f"--onnx-path {src} already has Q/DQ nodes; start from the float32 model")
    preset = opts.preset or quant.default_preset(opts.mode)
    excl = quant.resolve_exclusions(model, preset, list(opts.exclude_nodes), list(opts.exclude_op_types))
    calib = None
    if opts.calib:
        batch = in_shape[0] if in_shape and in_shape[0] else None
        calib = load_calib_tensor(opts.calib, expected_hw=(in_shape[2], in_shape[3]), expected_batch=batch)
    eps = list(opts.calibration_eps) or qm.default_calibration_eps()
    method = opts.calibration_method or ("entropy" if opts.mode == "int8" else "max")
    return Plan(input_name, preset, excl, calib, eps, method)


def _run_modelopt(opts: QuantizeOptions, plan: Plan, qm: Any, tmp: Path) -> dict[str, Any]:
    """ModelOpt's AutoCast (fp16/bf16) or ONNX PTQ (int8/fp8) of the source into ``tmp``: its record."""
    excl = plan.excl
    if opts.mode in quant.AUTOCAST_MODES:
        return qm.run_autocast(
            opts.onnx_path,
            tmp,
            opts.mode,
            plan.calib,
            plan.input_name,
            excl.patterns,
            excl.op_types,
            plan.eps,
            opts.verbose,
        )
    return qm.run_ptq(
        opts.onnx_path,
        tmp,
        opts.mode,
        plan.calib,
        plan.input_name,
        plan.method,
        plan.eps,
        excl.patterns,
        excl.op_types,
        opts.high_precision_dtype,
        opts.verbose,
    )


def convert(opts: QuantizeOptions, plan: Plan, qm: Any) -> Conversion:
    """ModelOpt writes ``opts.out`` atomically; the result must pass onnx.checker and keep the exclusions."""
    import onnx

    t0 = time.perf_counter()
    with atomic_output(opts.out, suffix=".onnx") as tmp:
        try:
            extra = _run_modelopt(opts, plan, qm, tmp)
        except UserError:
            raise
        except Exception as exc:  # ModelOpt internals: one line unless --verbose
            if opts.verbose:
                raise
            raise UserError(
                f"ModelOpt {opts.mode} conversion of {opts.onnx_path} failed: {type(exc).__name__}: {exc}; "
                "rerun with --verbose for the traceback"
            ) from exc
        seconds = time.perf_counter() - t0
        result = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(result)
        except onnx.checker.ValidationError as exc:
            raise UserError(f"ModelOpt produced a model that fails onnx.checker: {exc}") from exc
        violations = quant.unquantized_violations(result, plan.excl.nodes) if opts.mode in quant.PTQ_MODES else []
        if violations:
            raise UserError(f"nodes meant to stay high precision were quantized: {', '.join(violations[:5])}")
        return Conversion(extra, seconds, quant.graph_stats(result), quant.io_types(result))


def _calib_summary(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    rec = read_calib_record(path) or {}
    return {
        "path": str(path.resolve()),
        "sha256": sha256_file(path),
        "num_images": rec.get("num_images"),
        "image_ids": rec.get("image_ids"),
        "seed": rec.get("seed"),
        "source": rec.get("images_dir") or rec.get("image_list"),
        "record": f"{path}.json" if rec else None,
    }


def sidecar(opts: QuantizeOptions, plan: Plan, version: str, done: Conversion) -> dict[str, Any]:
    """The record ``<out>.json`` of the conversion (ModelOpt ``version``)."""
    ptq = opts.mode in quant.PTQ_MODES
    src, out = opts.onnx_path, opts.out
    return {
        "schema_version": SIDECAR_SCHEMA,
        "mode": opts.mode,
        "tool": "modelopt.onnx.autocast" if opts.mode in quant.AUTOCAST_MODES else "modelopt.onnx.quantization",
        "modelopt_version": version,
        "method": plan.method if ptq else None,
        "calibration_eps": plan.eps,
        "high_precision_dtype": opts.high_precision_dtype if ptq else opts.mode,
        "calibration": _calib_summary(opts.calib),
        "preset": plan.preset,
        "preset_description": quant.PRESETS[plan.preset].description,
        "exclude_patterns": plan.excl.patterns,
        "exclude_op_types": list(plan.excl.op_types),
        "excluded_nodes": list(plan.excl.nodes),
        "source_onnx": str(src.resolve()),
        "source_sha256": sha256_file(src),
        "output_sha256": sha256_file(out),
        "io_types": done.io,
        "seconds": round(done.seconds, 2),
        **done.stats,
        **done.extra,
    }
