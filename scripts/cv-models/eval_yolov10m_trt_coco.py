#!/usr/bin/env python3
"""Evaluate a YOLOv10 TensorRT / TensorRT-RTX engine on COCO.

The same evaluator as eval_yolov10m_onnx_coco.py (same pipeline, flags and metrics.json
schema) with a TensorRT backend. Give --engine-path to run an existing engine, or --onnx-path
(plus build options) to build one through the engine cache, or reuse the cached one.

Validation status: engine execution was tested only against a TensorRT runtime test double
(which runs the ONNX with ONNX Runtime); not yet on an RTX 5090.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import make_parser, output_file, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import check_output_paths
from common.eval.cli import add_eval_args, add_lane_flags, check_onnx_args, eval_config, open_data, run_eval
from common.eval.options import LaneOptions
from common.throughput.trt_lanes import TrtBackend
from common.trt.api import TrtApi, add_api_args, load_api
from common.trt.build import metadata_path
from common.trt.cli import add_build_args, build_from_args, options_from_args
from common.trt.runner import TrtRunner


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        __doc__ or "",
        [
            "python scripts/cv-models/eval_yolov10m_trt_coco.py "
            "--engine-path tmp/build-engine/trt/yolov10m.tensorrt.engine --max-images 0",
            "python scripts/cv-models/eval_yolov10m_trt_coco.py "
            "--onnx-path tmp/quant/yolov10m.fp16.onnx --trt-api tensorrt-rtx "
            "--max-images 0 --cuda-graph",
        ],
        usage="%(prog)s (--engine-path ENGINE | --onnx-path ONNX) [--trt-api API] [--data-root DIR] [--max-images N] "
        "[--out FILE] [options]",
    )
    parser.add_argument(
        "--onnx-path",
        type=Path,
        default=None,
        help="ONNX to build (or reuse from the engine cache); optional with --engine-path (default: none)",
    )
    add_api_args(parser)
    add_build_args(parser, required_onnx=False)
    t = add_eval_args(parser, task="eval-trt")
    t.add_argument("--cuda-graph", action="store_true", help="replay each enqueue as a CUDA graph (default: off)")
    t.add_argument(
        "--runtime-cache",
        type=output_file(None, "runtime cache file"),
        default=None,
        help="TensorRT-RTX runtime (JIT kernel) cache file, read and saved back (replaced only when TensorRT-RTX "
        "could read it; default: none, in memory only)",
    )
    t.add_argument(
        "--lanes",
        type=int,
        default=2,
        help="execution contexts of the engine, each on its own CUDA stream, running batches "
        "concurrently (lanes + 1 batches in flight, 2 x lanes + 1 where they overlap; default 2); 0: one plain "
        "runner (one context, one stream, no threads, one batch at a time; CPU pre- and post-processing): "
        "the first run to try on a new machine",
    )
    add_lane_flags(t, "with --lanes >= 1")
    return parser


def open_backend(
    engine_path: Path,
    api: TrtApi,
    lanes: LaneOptions,
    verbosity: str,
    runtime_cache: Path | None,
) -> TrtRunner | TrtBackend:
    """``lanes.lanes`` 0: one plain runner; otherwise that many runners on lanes."""
    runner = TrtRunner.open(
        engine_path, api, cuda_graph=lanes.cuda_graph, verbosity=verbosity, runtime_cache=runtime_cache
    )
    if lanes.lanes == 0:
        return runner
    return TrtBackend(
        runner, lanes=lanes.lanes, gpu_order=lanes.gpu_order, spin_wait=lanes.spin_wait, lane_threads=lanes.lane_threads
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.onnx_path is None and args.engine_path is None:
        raise UserError("give --engine-path ENGINE, or --onnx-path ONNX to build (or reuse) an engine")
    # every usage check before a build or an engine is opened
    config = eval_config(args)
    if args.onnx_path is not None:
        options_from_args(args)  # the build options' own checks, before the dataset or a build
    lanes = LaneOptions(args.lanes, args.gpu_order, args.cuda_graph, args.lane_wait, lane_threads=args.lane_threads)
    building = args.onnx_path is not None
    model_inputs = {"--onnx-path": args.onnx_path} if building else {"--engine-path": args.engine_path}
    # written by the build (engine, timing cache) or saved after the run (runtime cache)
    made = {"--engine-path": args.engine_path, "--timing-cache": args.timing_cache} if building else {}
    if building and args.engine_path is not None:
        made["--engine-path sidecar"] = metadata_path(args.engine_path)
    check_output_paths(
        {**made, "--runtime-cache": args.runtime_cache, "--out": args.out, "--detections-out": args.detections_out},
        model_inputs,
        force=args.force,
        vouchers=[args.out],
        caches=["--timing-cache", "--runtime-cache"],
    )
    if building:
        check_onnx_args("--onnx-path", args.onnx_path, args)
    dataset = open_data(config.data, config.out, model_inputs, config.eval)
    api = load_api(args.trt_api)
    verbosity = "verbose" if args.verbose else args.trt_verbosity
    extra: dict = {}
    if args.onnx_path is not None:
        built = build_from_args(args, api, verbosity)
        engine_path = built.engine_path
        print(f"{api.describe()}: {'cache hit' if built.cache_hit else 'built'}: {engine_path}")
        extra["engine_cache_hit"] = built.cache_hit
        model_path = args.onnx_path
    else:
        engine_path = args.engine_path
        model_path = engine_path
    backend = open_backend(engine_path, api, lanes, verbosity, args.runtime_cache)
    try:
        return run_eval(args, config, backend, model_path, dataset, {"trt": extra} if extra else None)
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(run_main(main))
