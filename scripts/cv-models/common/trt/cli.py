"""The engine-build flags (``common.trt.build.add_build_args``) as a ``BuildOptions``, and a build from them:
the CLI edge of the build library."""

from __future__ import annotations

import argparse
import sys

from common.trt.api import TrtApi
from common.trt.build import (
    BuildOptions,
    BuildResult,
    build_or_reuse,
    current_gpu,
    parse_compute_capabilities,
    parse_shapes,
)

__all__ = ["build_from_args", "options_from_args"]


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
