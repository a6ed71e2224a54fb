#!/usr/bin/env python3
"""Evaluate a YOLOv10 ONNX model on COCO with ONNX Runtime (CPU, CUDA or TensorRT EP)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.core.cli import check_range, make_parser, run_main, setup_logging
from common.core.errors import UserError
from common.eval.cli import GPU_ORDER_HELP, add_eval_args, check_onnx_args, eval_config, open_data, run_eval
from common.eval.options import GPU_ORDERS, LaneOptions
from common.ort.options import (
    CUDA_EP,
    add_ep_flags,
    available_providers,
    merge_provider_options,
    parse_provider_options,
    print_effective_options,
    resolve_provider_options,
)
from common.ort.session import OrtBackend

DEFAULT_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        __doc__ or "",
        [
            "python scripts/cv-models/eval_yolov10m_onnx_coco.py --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--providers CUDAExecutionProvider CPUExecutionProvider --max-images 0",
            "python scripts/cv-models/eval_yolov10m_onnx_coco.py "
            "--onnx-path models/cv-models/yolov10n-synth/yolov10n-synth.onnx --providers CPUExecutionProvider "
            "--data-root datasets/synthcoco-mini --max-images 0   # the bundled demo model and data",
        ],
    )
    parser.add_argument("--onnx-path", type=Path, required=True, help="YOLOv10 ONNX model (baseline or quantized)")
    parser.add_argument(
        "--providers",
        nargs="+",
        default=DEFAULT_PROVIDERS,
        help="ONNX Runtime execution providers in priority order (default: %(default)s)",
    )
    parser.add_argument(
        "--disable-cpu-fallback",
        action="store_true",
        help="strict: fail when ONNX Runtime would run any node on the CPU EP (session.disable_cpu_ep_fallback; "
        "models with shape subgraphs that the CUDA EP leaves to the CPU fail too) or when the first accelerator "
        "EP can't run",
    )
    parser.add_argument(
        "--require-accelerator",
        action="store_true",
        help="fail when the first requested accelerator EP does not initialise; single nodes may still run on "
        "the CPU (what validate uses for its GPU rows)",
    )
    parser.add_argument(
        "--provider-option",
        action="append",
        default=[],
        metavar="EP:KEY=VALUE",
        help="option passed to an execution provider (repeatable; applied after the flags below)",
    )
    parser.add_argument(
        "--io-binding",
        action="store_true",
        help="CUDA EP only: our device buffers + pinned staging, copies overlapped with compute "
        "(--lanes sessions, each on its own CUDA stream); the fastest GPU path. Each lane replays a "
        "CUDA graph of the model where ONNX Runtime can capture one (else per-kernel runs; metrics.json"
        " run.backend.cuda_graph / cuda_graph_fallback say which): --cuda-graph insists, "
        "--provider-option CUDAExecutionProvider:enable_cuda_graph=0 turns it off",
    )
    parser.add_argument(
        "--lanes",
        type=int,
        default=3,
        help="with --io-binding: ORT sessions running batches concurrently, each on its own CUDA stream (default 3)",
    )
    parser.add_argument("--gpu-order", choices=GPU_ORDERS, default="auto", help="with --io-binding: " + GPU_ORDER_HELP)
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        help="ORT CPU threads per session (default: 1 when a GPU EP leads --providers, else ORT's default)",
    )
    add_ep_flags(parser)
    add_eval_args(parser, task="eval-onnx")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # every usage check before a session is made: flags, execution-provider options, outputs, model input, dataset
    config = eval_config(args)
    lanes = LaneOptions(args.lanes, args.gpu_order) if args.io_binding else None
    if lanes is not None and lanes.lanes == 0:
        raise UserError("--lanes 0 (one plain runner) is for TensorRT; with --io-binding give --lanes >= 1")
    check_range("--intra-op-threads", args.intra_op_threads, 0)
    available = available_providers()
    options = merge_provider_options(
        resolve_provider_options(vars(args), args.providers, available),
        parse_provider_options(args.provider_option, args.providers),
    )
    dataset = open_data(config.data, config.out, {"--onnx-path": args.onnx_path})
    check_onnx_args("--onnx-path", args.onnx_path, args)
    backend: Any
    if lanes is not None:
        if args.providers[0] != CUDA_EP:
            raise UserError("--io-binding drives the CUDA EP: put CUDAExecutionProvider first in --providers")
        from common.throughput.ort_lanes import OrtCudaBackend

        backend = OrtCudaBackend(
            str(args.onnx_path),
            options,
            max_batch=config.eval.batch_size,
            imgsz=config.eval.imgsz,
            lanes=lanes.lanes,
            disable_cpu_fallback=args.disable_cpu_fallback,
            gpu_order=lanes.gpu_order,
            graph="auto",
        )
    else:
        threads = args.intra_op_threads
        if threads is None and args.providers[0] != "CPUExecutionProvider" and args.providers[0] in available:
            threads = 1
        backend = OrtBackend(
            str(args.onnx_path),
            args.providers,
            options,
            args.disable_cpu_fallback,
            available=available,
            intra_op_threads=threads,
            require_accelerator=args.require_accelerator,
        )
    print_effective_options(args.providers, options)  # once the session exists: a refused run stays one line
    print(f"onnxruntime {backend.version}: providers in use: {', '.join(backend.providers_used)}")
    try:
        return run_eval(args, config, backend, args.onnx_path, dataset)
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(run_main(main))
