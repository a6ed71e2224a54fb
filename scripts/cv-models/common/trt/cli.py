"""The engine-build flags (``add_build_args``, shared by build-engine and eval-trt), parsed into a
``BuildOptions``, and a build from them: the CLI edge of the build library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from common.core.cli import FORCE_HELP, output_file
from common.trt.api import TrtApi
from common.trt.build import (
    PROFILING_VERBOSITY,
    BuildOptions,
    BuildResult,
    build_or_reuse,
    current_gpu,
    parse_compute_capabilities,
    parse_shapes,
)

__all__ = ["add_build_args", "build_from_args", "options_from_args"]


def options_from_args(args: argparse.Namespace) -> BuildOptions:
    return BuildOptions(
        fp16=args.fp16,
        int8=args.int8,
        fp8=args.fp8,
        shapes=parse_shapes(args.shapes),
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        workspace_mib=args.workspace_mib,
        opt_level=args.builder_optimization_level,
        tf32=not args.no_tf32,
        compute_capabilities=parse_compute_capabilities(args.compute_capability),
        profiling_verbosity=args.profiling_verbosity,
    )


def build_from_args(args: argparse.Namespace, api: TrtApi, verbosity: str) -> BuildResult:
    return build_or_reuse(
        args.onnx_path,
        args.engine_path,
        options_from_args(args),
        api,
        force=args.force,
        timing_cache=args.timing_cache,
        use_timing_cache=not args.no_timing_cache,
        verbosity=verbosity,
        progress=not args.no_build_progress and sys.stderr.isatty(),
        gpu=current_gpu(),
    )


def add_build_args(cli: Any, *, required_onnx: bool = True) -> None:
    """The engine-build flags shared by build_trt_engine.py and eval_yolov10m_trt_coco.py."""
    g = cli.add_argument_group("engine build")
    if required_onnx:
        g.add_argument("--onnx-path", type=Path, required=True, help="ONNX model to build")
    g.add_argument(
        "--engine-path",
        type=output_file(None, "engine file"),
        default=None,
        help="engine file (default: tmp/build-engine/trt/<onnx-stem>.<backend>.engine); an existing one is "
        "replaced only when this toolkit built it (its .json sidecar records it), or with --force",
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="rebuild even when the cached engine matches, and " + FORCE_HELP.replace(" (default: refuse them)", ""),
    )
    g.add_argument(
        "--shapes",
        action="append",
        default=[],
        metavar="NAME:MIN,OPT,MAX",
        help="optimization profile range of one input, e.g. images:1x3x640x640,4x3x640x640,8x3x640x640 "
        "(repeatable; default: from --min/--opt/--max-batch and the ONNX shapes)",
    )
    g.add_argument("--min-batch", type=int, default=None, help="profile min batch for batch-dynamic inputs (default 1)")
    g.add_argument("--opt-batch", type=int, default=None, help="profile opt batch (default: max batch)")
    g.add_argument("--max-batch", type=int, default=None, help="profile max batch (default: min batch or 1)")
    g.add_argument(
        "--workspace-mib", type=int, default=None, help="workspace memory pool limit in MiB (default: TensorRT's)"
    )
    g.add_argument(
        "--builder-optimization-level",
        type=int,
        default=None,
        choices=range(6),
        metavar="0-5",
        help="builder optimisation level (TensorRT default 3)",
    )
    g.add_argument(
        "--profiling-verbosity",
        choices=list(PROFILING_VERBOSITY),
        default="layer_names_only",
        help="layer detail kept in the engine (default: layer_names_only, as trtexec); detailed is what engine "
        "introspection (the per-layer precision summary, Nsight) needs and may slow enqueue",
    )
    g.add_argument("--no-tf32", action="store_true", help="disallow TF32 for FP32 layers")
    g.add_argument(
        "--fp16",
        action="store_true",
        help="TensorRT 10.x only: weakly typed FP16 (11.x/RTX: quantize_onnx.py --mode fp16 instead)",
    )
    g.add_argument("--int8", action="store_true", help="TensorRT 10.x only, needs Q/DQ-free ONNX (prefer Q/DQ ONNX)")
    g.add_argument(
        "--fp8",
        action="store_true",
        help="TensorRT 10.x only: BuilderFlag.FP8 enables FP8 plugins only, a Q/DQ-free ONNX stays "
        "FP32/TF32 (use quantize_onnx.py --mode fp8)",
    )
    g.add_argument(
        "--compute-capability",
        default=None,
        metavar="SM120[,SM89...]",
        help="TensorRT-RTX target GPUs (default: the library's default)",
    )
    g.add_argument(
        "--timing-cache",
        type=output_file(None, "timing cache file"),
        default=None,
        help="timing cache file (default: tmp/build-engine/trt/timing-<backend>-<version>-<gpu>.cache)",
    )
    g.add_argument("--no-timing-cache", action="store_true", help="neither load nor save a timing cache")
    g.add_argument("--no-build-progress", action="store_true", help="no build progress bars")
