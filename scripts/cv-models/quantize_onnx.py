#!/usr/bin/env python3
"""Make an FP16/BF16 (ModelOpt AutoCast) or INT8/FP8 (ModelOpt ONNX PTQ, Q/DQ) ONNX precision candidate.

TensorRT 11.x and TensorRT-RTX take precision only from the ONNX. Run this in the quant
environment (`pixi run -e quant quantize ...`, or .venv-quant/bin/python): ModelOpt pulls
onnxruntime-gpu, which must not share an environment with onnxruntime.

Writes OUT and OUT.json (mode, method, calibration images, ModelOpt version, Q/DQ counts,
quantized node types, excluded nodes). The model's I/O stays float32.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import add_force_flag, make_parser, output_file, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import atomic_output, atomic_write_json, check_output_paths, sha256_file, stamp
from common.quant import presets as quant
from common.quant.calib import load_calib_tensor, read_calib_record

log = logging.getLogger("quantize_onnx")
SIDECAR_SCHEMA = 1


def build_parser():
    parser = make_parser(
        __doc__.splitlines()[1],
        [
            "pixi run -e quant quantize --mode int8 --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--calib tmp/calib/coco-train100.npy --out tmp/quant/yolov10m.int8.onnx",
            "pixi run -e quant quantize --mode fp8 --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--calib tmp/calib/coco-train100.npy --calibration-method max --out tmp/quant/yolov10m.fp8.onnx",
            "pixi run -e quant quantize --mode fp16 --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--out tmp/quant/yolov10m.fp16.onnx",
        ],
    )
    parser.add_argument("--mode", required=True, choices=quant.MODES, help="target precision")
    parser.add_argument("--onnx-path", required=True, help="float32 ONNX model to convert")
    parser.add_argument(
        "--out",
        required=True,
        type=output_file(None, "output .onnx"),
        help="output .onnx (OUT.json is written beside it); an existing OUT is replaced only when this toolkit "
        "wrote it, or with --force",
    )
    parser.add_argument(
        "--calib",
        help="calibration tensor .npy from make_calib_npy.py (float32 NCHW, evaluation letterbox); "
        "required for int8/fp8, optional for fp16/bf16 (AutoCast range check; random data without it; default: none)",
    )
    parser.add_argument(
        "--calibration-method",
        choices=("entropy", "max"),
        default=None,
        help="int8/fp8 activation range method (default: entropy for int8, max for fp8)",
    )
    parser.add_argument(
        "--calibration-eps",
        nargs="+",
        metavar="EP",
        default=None,
        help="ORT EPs for calibration/reference runs, in priority order, e.g. `cuda:0 cpu` "
        "(default: cuda:0 cpu when a GPU is present, else cpu)",
    )
    parser.add_argument(
        "--preset",
        choices=tuple(quant.PRESETS),
        default=None,
        help="nodes kept in high precision: yolov10-head (default for int8) keeps the detect head's class towers, "
        "final box convs, DFL and post-processing out of INT8/FP8; none (default for other modes)",
    )
    parser.add_argument(
        "--exclude-nodes",
        nargs="+",
        metavar="REGEX",
        default=[],
        help="more node-name regexes kept in high precision (Python re, matched at the start of the name; "
        "default: none)",
    )
    parser.add_argument(
        "--exclude-op-types",
        nargs="+",
        metavar="OP",
        default=[],
        help="op types kept in high precision, e.g. Softmax (default: none)",
    )
    parser.add_argument(
        "--high-precision-dtype",
        choices=("fp16", "fp32"),
        default="fp16",
        help="int8/fp8: dtype of the non-quantized parts (default fp16). TensorRT builds a Q/DQ ONNX strongly "
        "typed, so these layers run in exactly this dtype: fp16 gives what trtexec --int8 --fp16 gives, fp32 "
        "runs them in FP32/TF32",
    )
    add_force_flag(parser)
    return parser


def _calib_summary(path: str | None) -> dict | None:
    if path is None:
        return None
    rec = read_calib_record(path) or {}
    return {
        "path": str(Path(path).resolve()),
        "sha256": sha256_file(path),
        "num_images": rec.get("num_images"),
        "image_ids": rec.get("image_ids"),
        "seed": rec.get("seed"),
        "source": rec.get("images_dir") or rec.get("image_list"),
        "record": f"{path}.json" if rec else None,
    }


@dataclass
class _Plan:
    """What the cheap checks decided, before ModelOpt is imported."""

    input_name: str
    preset: str
    excl: quant.Exclusions
    calib: Any  # the calibration tensor, or None
    eps: list[str]
    method: str


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from common.quant import modelopt as qm

    src, out = Path(args.onnx_path), Path(args.out)
    _check_args(args, src, out)
    plan = _plan(args, src, qm)
    # ModelOpt (and torch) import slowly: all cheap checks above run first.
    version = qm.modelopt_version()  # clear error when ModelOpt is missing
    if args.mode == "nvfp4":
        qm.check_nvfp4_supported()  # raises with the installed ModelOpt 0.47
        raise UserError(
            "--mode nvfp4: the installed ModelOpt lists NVFP4 for ONNX PTQ, but this tool has not been "
            "validated with it; use ModelOpt's own CLI (python -m modelopt.onnx.quantization)"
        )
    print(
        f"quantize {src.name}: mode={args.mode} preset={plan.preset} ({len(plan.excl.nodes)} nodes kept high "
        f"precision) calib={args.calib or 'none'} eps={' '.join(plan.eps)} modelopt={version}",
        file=sys.stderr,
    )
    extra, seconds, stats, io = _convert(args, src, out, plan, qm)
    if any(t != "FLOAT" for t in io.values()):
        log.warning("output model I/O is not all float32: %s", io)
    if args.mode in quant.PTQ_MODES and stats["quantize_linear"] == 0:
        log.warning("no Q/DQ node was inserted: is everything excluded?")
    record = _record(args, src, out, plan, version, seconds, stats, io, extra)
    atomic_write_json(out.with_name(out.name + ".json"), stamp(record, {out.name: record["output_sha256"]}))
    types = ", ".join(f"{k}={v}" for k, v in stats["quantized_node_types"].items()) or "-"
    print(
        f"wrote {out} ({args.mode}, {seconds:.1f} s): Q/DQ {stats['quantize_linear']}/{stats['dequantize_linear']}, "
        f"quantized nodes {stats['quantized_nodes']} ({types}), kept high precision {len(plan.excl.nodes)}; "
        f"details in {out}.json"
    )
    return 0


def _check_args(args: Any, src: Path, out: Path) -> None:
    """Flags and paths, before anything is read."""
    if not src.is_file():
        raise UserError(f"--onnx-path {src} not found")
    if out.suffix != ".onnx":
        raise UserError(f"--out must end in .onnx, got {out}")
    if out.resolve() == src.resolve():
        raise UserError("--out must differ from --onnx-path")
    calib_json = Path(f"{args.calib}.json") if args.calib else None
    check_output_paths(
        {"--out": out, "--out sidecar": out.with_name(out.name + ".json")},
        {"--onnx-path": src, "--calib": Path(args.calib) if args.calib else None, "--calib sidecar": calib_json},
        force=args.force,
    )
    if args.mode in quant.AUTOCAST_MODES and args.calibration_method:
        raise UserError(f"--calibration-method applies to int8/fp8, not --mode {args.mode}")
    if args.mode in quant.PTQ_MODES and not args.calib:
        raise UserError(f"--mode {args.mode} needs --calib: build one with make_calib_npy.py (about 100 images)")


def _plan(args: Any, src: Path, qm: Any) -> _Plan:
    """Read the source graph once: its input, the exclusions of the preset, the calibration tensor."""
    import onnx

    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as exc:
        raise UserError(f"--onnx-path {src} is not a readable ONNX model: {exc}") from exc
    input_name, in_shape = quant.input_spec(model)
    if quant.graph_stats(model)["quantize_linear"]:
        raise UserError(f"--onnx-path {src} already has Q/DQ nodes; start from the float32 model")
    preset = args.preset or quant.default_preset(args.mode)
    excl = quant.resolve_exclusions(model, preset, args.exclude_nodes, args.exclude_op_types)
    calib = None
    if args.calib:
        batch = in_shape[0] if in_shape and in_shape[0] else None
        calib = load_calib_tensor(args.calib, expected_hw=(in_shape[2], in_shape[3]), expected_batch=batch)
    eps = args.calibration_eps or qm.default_calibration_eps()
    method = args.calibration_method or ("entropy" if args.mode == "int8" else "max")
    return _Plan(input_name, preset, excl, calib, eps, method)


def _convert(args: Any, src: Path, out: Path, plan: _Plan, qm: Any) -> tuple[dict[str, Any], float, dict, dict]:
    """ModelOpt writes ``out`` atomically; the result must pass onnx.checker and keep the exclusions."""
    import onnx

    t0 = time.perf_counter()
    excl = plan.excl
    with atomic_output(out, suffix=".onnx") as tmp:
        try:
            if args.mode in quant.AUTOCAST_MODES:
                extra = qm.run_autocast(
                    src,
                    tmp,
                    args.mode,
                    plan.calib,
                    plan.input_name,
                    excl.patterns,
                    excl.op_types,
                    plan.eps,
                    args.verbose,
                )
            else:
                extra = qm.run_ptq(
                    src,
                    tmp,
                    args.mode,
                    plan.calib,
                    plan.input_name,
                    plan.method,
                    plan.eps,
                    excl.patterns,
                    excl.op_types,
                    args.high_precision_dtype,
                    args.verbose,
                )
        except UserError:
            raise
        except Exception as exc:  # ModelOpt internals: one line unless --verbose
            if args.verbose:
                raise
            raise UserError(
                f"ModelOpt {args.mode} conversion of {src} failed: {type(exc).__name__}: {exc}; "
                "rerun with --verbose for the traceback"
            ) from exc
        seconds = time.perf_counter() - t0
        result = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(result)
        except onnx.checker.ValidationError as exc:
            raise UserError(f"ModelOpt produced a model that fails onnx.checker: {exc}") from exc
        violations = quant.unquantized_violations(result, excl.nodes) if args.mode in quant.PTQ_MODES else []
        if violations:
            raise UserError(f"nodes meant to stay high precision were quantized: {', '.join(violations[:5])}")
        return extra, seconds, quant.graph_stats(result), quant.io_types(result)


def _record(
    args: Any,
    src: Path,
    out: Path,
    plan: _Plan,
    version: str,
    seconds: float,
    stats: dict[str, Any],
    io: dict[str, str],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The sidecar ``<out>.json``."""
    ptq = args.mode in quant.PTQ_MODES
    return {
        "schema_version": SIDECAR_SCHEMA,
        "mode": args.mode,
        "tool": "modelopt.onnx.autocast" if args.mode in quant.AUTOCAST_MODES else "modelopt.onnx.quantization",
        "modelopt_version": version,
        "method": plan.method if ptq else None,
        "calibration_eps": plan.eps,
        "high_precision_dtype": args.high_precision_dtype if ptq else args.mode,
        "calibration": _calib_summary(args.calib),
        "preset": plan.preset,
        "preset_description": quant.PRESETS[plan.preset].description,
        "exclude_patterns": plan.excl.patterns,
        "exclude_op_types": list(plan.excl.op_types),
        "excluded_nodes": list(plan.excl.nodes),
        "source_onnx": str(src.resolve()),
        "source_sha256": sha256_file(src),
        "output_sha256": sha256_file(out),
        "io_types": io,
        "seconds": round(seconds, 2),
        **stats,
        **extra,
    }


if __name__ == "__main__":
    sys.exit(run_main(main))
