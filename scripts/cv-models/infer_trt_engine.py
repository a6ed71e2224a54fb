#!/usr/bin/env python3
"""Run a TensorRT / TensorRT-RTX engine on .npy inputs (or seeded random data); optionally benchmark it.

Writes one <output>.npy per engine output and infer.json (I/O, timings) into the --out folder.
--benchmark reports trtexec's figures: GPU compute, H2D, D2H, enqueue, latency (H2D+compute+D2H,
CUDA events), end-to-end host time and throughput, each as mean/median/p90/p95/p99.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)

# isort: split
from common.core.cli import add_force_flag, add_old_spelling, make_parser, run_main, setup_logging
from common.trt.api import add_api_args
from common.trt.infer import InferOptions, infer, parse_input_shapes, parse_inputs


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        __doc__ or "",
        [
            "python scripts/cv-models/infer_trt_engine.py --engine-path tmp/build-engine/trt/yolov10m.tensorrt.engine "
            "--input images=tmp/calib/one.npy --out tmp/infer-trt/run1",
            "python scripts/cv-models/infer_trt_engine.py --engine-path tmp/build-engine/trt/yolov10m.tensorrt.engine "
            "--seed 0 --benchmark --cuda-graph --iterations 500",
            "python scripts/cv-models/infer_trt_engine.py "
            "--engine-path tmp/build-engine/trt/yolov10m-dynbatch.tensorrt.engine "
            "--input-shape images:4x3x640x640 --benchmark",
        ],
    )
    parser.add_argument(
        "--engine-path",
        "--engine",
        dest="engine_path",
        type=Path,
        required=True,
        help="serialized engine (build_trt_engine.py); --engine is the old spelling",
    )
    add_api_args(parser)
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=FILE.npy",
        help="input tensor from a .npy file (repeatable; default: none, every input gets random data)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    shape = parser.add_argument(
        "--input-shape",
        dest="input_shapes",
        action="append",
        default=[],
        metavar="NAME:NxCxHxW",
        help="concrete shape of a dynamic input for the random data, repeatable (default: the profile's opt shape); "
        "(a profile range NAME:MIN,OPT,MAX is a build option, not this)",
    )
    out = parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder for the outputs (.npy) and infer.json (default: tmp/infer-trt/<timestamp>/); files "
        "there are replaced only when this toolkit wrote them, or with --force",
    )
    add_force_flag(parser)
    parser.add_argument("--benchmark", action="store_true", help="time warm-up + --iterations runs (default: off)")
    warmup = parser.add_argument(
        "--warmup-runs", type=int, default=10, help="untimed runs before timing, >= 0 (default 10)"
    )
    parser.add_argument("--iterations", type=int, default=100, help="timed runs, >= 1 (default 100)")
    parser.add_argument("--cuda-graph", action="store_true", help="replay the enqueue as a CUDA graph (default: off)")
    for old, new in (("--shapes", shape), ("--shape", shape), ("--output-dir", out), ("--warmup", warmup)):
        add_old_spelling(parser, old, new)
    parser.add_argument(
        "--runtime-cache",
        type=Path,
        default=None,
        help="TensorRT-RTX runtime (JIT kernel) cache file, loaded and saved (default: none)",
    )
    return parser


def options_from_args(args: argparse.Namespace) -> InferOptions:
    return InferOptions(
        engine_path=args.engine_path,
        api=args.trt_api,
        verbosity="verbose" if args.verbose else args.trt_verbosity,
        inputs=parse_inputs(args.input),  # missing files fail before anything is opened
        input_shapes=parse_input_shapes(args.input_shapes),
        seed=args.seed,
        out=args.out,
        benchmark=args.benchmark,
        warmup_runs=args.warmup_runs,
        iterations=args.iterations,
        cuda_graph=args.cuda_graph,
        runtime_cache=args.runtime_cache,
        force=args.force,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    infer(options_from_args(args))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
