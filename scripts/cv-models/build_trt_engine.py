#!/usr/bin/env python3
"""Build a TensorRT / TensorRT-RTX engine from an ONNX model, with an engine cache.

Writes <engine> and <engine>.json (ONNX sha256, backend + version, GPU, options, profiles,
build seconds, engine size, layer/precision summary). An engine whose cache key (ONNX
sha256, options, backend version, GPU) matches is reused ("cache hit"); --force rebuilds.
Precision: on TensorRT 11.x and TensorRT-RTX it comes from the ONNX only (make an FP16/INT8/FP8
ONNX with quantize_onnx.py); --fp16/--int8/--fp8 are TensorRT 10.x builder flags.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import make_parser, run_main, setup_logging
from common.core.results import check_output_paths
from common.trt.api import add_api_args, load_api
from common.trt.build import default_engine_path, metadata_path
from common.trt.cli import add_build_args, build_from_args, options_from_args


def build_parser():
    parser = make_parser(
        __doc__ or "",
        [
            "python scripts/cv-models/build_trt_engine.py --onnx-path models/cv-models/yolov10m/yolov10m.onnx",
            "python scripts/cv-models/build_trt_engine.py --onnx-path tmp/quant/yolov10m.fp16.onnx "
            "--trt-api tensorrt-rtx --compute-capability SM120",
            "python scripts/cv-models/build_trt_engine.py --onnx-path models/cv-models/yolov10m/yolov10m-dynbatch.onnx "
            "--shapes images:1x3x640x640,8x3x640x640,16x3x640x640",
            "python scripts/cv-models/build_trt_engine.py --onnx-path models/cv-models/yolov10m/yolov10m.onnx --fp16   "
            "# TensorRT 10.x only",
        ],
    )
    add_api_args(parser)
    add_build_args(parser)
    return parser


def check_build_outputs(args, api) -> None:
    """The engine, its .json sidecar and the timing cache: not the ONNX, not each other, not a directory."""
    engine = args.engine_path or default_engine_path(args.onnx_path, api)
    check_output_paths(
        {"--engine-path": engine, "--engine-path sidecar": metadata_path(engine), "--timing-cache": args.timing_cache},
        {"--onnx-path": args.onnx_path},
        force=args.force,
        caches=["--timing-cache"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    options_from_args(args)  # the build options' own checks, before the API is loaded
    api = load_api(args.trt_api)
    check_build_outputs(args, api)  # before the (long) build
    verbosity = "verbose" if args.verbose else args.trt_verbosity
    result = build_from_args(args, api, verbosity)
    meta = result.metadata
    state = "cache hit" if result.cache_hit else f"built in {meta['build_seconds']:.1f} s"
    print(f"{api.describe()}: {state}: {result.engine_path} ({meta['engine_bytes'] / 2**20:.1f} MiB)")
    print(f"metadata: {result.engine_path}.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
