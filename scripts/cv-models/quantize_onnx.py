#!/usr/bin/env python3
"""Make an FP16/BF16 (ModelOpt AutoCast) or INT8/FP8 (ModelOpt ONNX PTQ, Q/DQ) ONNX precision candidate.

TensorRT 11.x and TensorRT-RTX take precision only from the ONNX. Run this in the quant
environment (`pixi run -e quant quantize ...`, or .venv-quant/bin/python): ModelOpt pulls
onnxruntime-gpu, which must not share an environment with onnxruntime.

Writes OUT and OUT.json (mode, method, calibration images, ModelOpt version, Q/DQ counts,
quantized node types, excluded nodes). The model's I/O stays float32.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import add_force_flag, make_parser, output_file, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import atomic_write_json, check_output_paths, stamp
from common.quant import presets as quant
from common.quant.convert import QuantizeOptions, check_options, convert, plan, sidecar

log = logging.getLogger("quantize_onnx")


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--onnx-path", type=Path, required=True, help="float32 ONNX model to convert")
    parser.add_argument(
        "--out",
        required=True,
        type=output_file(None, "output .onnx"),
        help="output .onnx (OUT.json is written beside it); an existing OUT is replaced only when this toolkit "
        "wrote it, or with --force",
    )
    parser.add_argument(
        "--calib",
        type=Path,
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


def options_from_args(args: argparse.Namespace) -> QuantizeOptions:
    return QuantizeOptions(
        mode=args.mode,
        onnx_path=args.onnx_path,
        out=args.out,
        calib=args.calib,
        calibration_method=args.calibration_method,
        calibration_eps=tuple(args.calibration_eps or ()),
        preset=args.preset,
        exclude_nodes=tuple(args.exclude_nodes),
        exclude_op_types=tuple(args.exclude_op_types),
        high_precision_dtype=args.high_precision_dtype,
        verbose=args.verbose,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from common.quant import modelopt as qm

    opts = options_from_args(args)
    check_options(opts)
    out, calib = opts.out, opts.calib
    check_output_paths(
        {"--out": out, "--out sidecar": out.with_name(out.name + ".json")},
        {
            "--onnx-path": opts.onnx_path,
            "--calib": calib,
            "--calib sidecar": calib.with_name(calib.name + ".json") if calib else None,
        },
        force=args.force,
    )
    chosen = plan(opts, qm)
    # ModelOpt (and torch) import slowly: all cheap checks above run first.
    version = qm.modelopt_version()  # clear error when ModelOpt is missing
    if opts.mode == "nvfp4":
        qm.check_nvfp4_supported()  # raises with the installed ModelOpt 0.47
        raise UserError(
            "--mode nvfp4: the installed ModelOpt lists NVFP4 for ONNX PTQ, but this tool has not been "
            "validated with it; use ModelOpt's own CLI (python -m modelopt.onnx.quantization)"
        )
    print(
        f"quantize {opts.onnx_path.name}: mode={opts.mode} preset={chosen.preset} ({len(chosen.excl.nodes)} nodes "
        f"kept high precision) calib={calib or 'none'} eps={' '.join(chosen.eps)} modelopt={version}",
        file=sys.stderr,
    )
    done = convert(opts, chosen, qm)
    if any(t != "FLOAT" for t in done.io.values()):
        log.warning("output model I/O is not all float32: %s", done.io)
    if opts.mode in quant.PTQ_MODES and done.stats["quantize_linear"] == 0:
        log.warning("no Q/DQ node was inserted: is everything excluded?")
    record = sidecar(opts, chosen, version, done)
    atomic_write_json(out.with_name(out.name + ".json"), stamp(record, {out.name: record["output_sha256"]}))
    stats = done.stats
    types = ", ".join(f"{k}={v}" for k, v in stats["quantized_node_types"].items()) or "-"
    print(
        f"wrote {out} ({opts.mode}, {done.seconds:.1f} s): Q/DQ {stats['quantize_linear']}/"
        f"{stats['dequantize_linear']}, quantized nodes {stats['quantized_nodes']} ({types}), kept high precision "
        f"{len(chosen.excl.nodes)}; details in {out}.json"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
