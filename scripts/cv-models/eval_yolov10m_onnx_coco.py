#!/usr/bin/env python3
"""Evaluate a YOLOv10 ONNX model on COCO with ONNX Runtime (CPU, CUDA or TensorRT EP)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import add_force_flag, check_range, make_parser, run_main, setup_logging
from common.core.errors import UserError
from common.eval.cli import (
    add_eval_args,
    add_lane_flags,
    auto_or_count,
    check_onnx_args,
    eval_config,
    open_data,
    run_eval,
)
from common.eval.fast_path import IO_BINDING_MODES, OrtPath, fast_path_record, probe_gpu, resolve_io_binding
from common.eval.options import LaneOptions
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
        usage="%(prog)s --onnx-path ONNX [--providers EP [EP ...]] [--data-root DIR] [--max-images N] [--out FILE] "
        "[options]",
    )
    parser.add_argument("--onnx-path", type=Path, required=True, help="YOLOv10 ONNX model (baseline or quantized)")
    parser.add_argument(
        "--providers",
        nargs="+",
        default=None,
        help=f"ONNX Runtime execution providers in priority order (default: {' '.join(DEFAULT_PROVIDERS)}; "
        "the IO-binding lanes run on CUDAExecutionProvider alone)",
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
        help="option passed to an execution provider (repeatable; applied after the EP flags; default: none)",
    )
    t = add_eval_args(parser, task="eval-onnx")
    t.add_argument(
        "--io-binding",
        nargs="?",
        const="on",
        default="auto",
        choices=IO_BINDING_MODES,
        help="CUDA EP only: our device buffers, copies overlapped with compute on --lanes sessions (the fastest "
        "GPU path, a CUDA graph per lane where ONNX Runtime can capture one). auto (default): on where ONNX "
        "Runtime offers CUDAExecutionProvider and a CUDA device is present, unless --providers leads with another "
        "EP, --intra-op-threads or options for another EP are given (metrics.json run.fast_path says which path "
        "ran and why); --io-binding alone = on; off: a plain session",
    )
    t.add_argument(
        "--lanes",
        type=int,
        default=3,
        help="with --io-binding: ORT sessions running batches concurrently, each on its own CUDA stream (default 3)",
    )
    add_lane_flags(t, "with --io-binding")
    t.add_argument(
        "--lane-depth",
        type=auto_or_count("a number of batches"),
        default="auto",
        metavar="N",
        help="with --io-binding, where the lanes overlap: batches a lane keeps enqueued on its stream (default auto: "
        "2 for lanes replaying CUDA graphs, else 1)",
    )
    t.add_argument(
        "--intra-op-threads",
        type=int,
        default=None,
        help="ORT CPU threads per session (default: 1 when a GPU EP leads --providers, else ORT's default)",
    )
    add_ep_flags(parser)
    add_force_flag(parser)
    return parser


def resolve_path(args: argparse.Namespace, options: dict[str, dict[str, str]], available: Sequence[str]) -> OrtPath:
    """The flags and this machine -> IO-binding lanes or a plain session, and on which providers. ``options``:
    the EP options the flags give (options for an EP other than CUDA keep ``auto`` on the plain session)."""
    plain = ["--intra-op-threads"] if args.intra_op_threads is not None else []
    plain += [f"options for {ep}" for ep in options if ep != CUDA_EP]
    facts = probe_gpu(available)
    providers = args.providers or DEFAULT_PROVIDERS
    return resolve_io_binding(args.io_binding, providers, args.providers is not None, facts, plain)


def lane_options(args: argparse.Namespace) -> LaneOptions:
    """``--lanes``, ``--gpu-order``, ``--lane-wait``, ``--lane-depth`` and ``--lane-threads`` (``OptionError``
    naming the flag)."""
    depth = None if args.lane_depth == "auto" else args.lane_depth
    return LaneOptions(
        args.lanes, args.gpu_order, lane_wait=args.lane_wait, lane_depth=depth, lane_threads=args.lane_threads
    )


def lane_backend(args: argparse.Namespace, config: Any, options: dict[str, dict[str, str]], lanes: LaneOptions) -> Any:
    """IO-binding lanes on the CUDA EP (``common.throughput.ort_lanes``)."""
    from common.throughput.ort_lanes import OrtCudaBackend

    return OrtCudaBackend(
        str(args.onnx_path),
        options,
        max_batch=config.eval.batch_size,
        imgsz=config.eval.imgsz,
        lanes=lanes.lanes,
        disable_cpu_fallback=args.disable_cpu_fallback,
        gpu_order=lanes.gpu_order,
        graph="auto",
        spin_wait=lanes.spin_wait,
        lane_depth=lanes.lane_depth,
        lane_threads=lanes.lane_threads,
    )


def plain_backend(args: argparse.Namespace, providers: list[str], options: dict, available: list[str]) -> Any:
    """One ONNX Runtime session on ``providers`` (session.run on host arrays)."""
    threads = args.intra_op_threads
    if threads is None and providers[0] != "CPUExecutionProvider" and providers[0] in available:
        threads = 1
    return OrtBackend(
        str(args.onnx_path),
        providers,
        options,
        args.disable_cpu_fallback,
        available=available,
        intra_op_threads=threads,
        require_accelerator=args.require_accelerator,
    )


def make_backend(
    args: argparse.Namespace,
    config: Any,
    path: OrtPath,
    available: list[str],
    options: dict[str, dict[str, str]],
    lanes: LaneOptions,
) -> tuple[Any, OrtPath]:
    """The backend ``path`` asks for; IO-binding lanes that ``auto`` chose but that can't start leave the plain
    session on the --providers list (the returned path says why)."""
    if not path.io_binding:
        return plain_backend(args, list(path.providers), options, available), path
    try:
        return lane_backend(args, config, options, lanes), path
    except (UserError, RuntimeError) as exc:
        if path.requested != "auto":
            raise
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        providers = list(args.providers or DEFAULT_PROVIDERS)
        fallback = OrtPath(False, tuple(providers), "auto", f"IO-binding lanes could not start: {why}")
        return plain_backend(args, providers, options, available), fallback


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    # every usage check before a session is made: flags, execution-provider options, outputs, model input, dataset
    config = eval_config(args)
    if args.lanes < 1:
        raise UserError("--lanes 0 (one plain runner) is for TensorRT; with --io-binding give --lanes >= 1")
    check_range("--intra-op-threads", args.intra_op_threads, 0)
    lanes = lane_options(args)
    available = available_providers()
    providers = args.providers or DEFAULT_PROVIDERS
    options = merge_provider_options(
        resolve_provider_options(vars(args), providers, available),
        parse_provider_options(args.provider_option, providers),
    )
    path = resolve_path(args, options, available)
    dataset = open_data(config.data, config.out, {"--onnx-path": args.onnx_path}, config.eval)
    check_onnx_args("--onnx-path", args.onnx_path, args)
    backend, path = make_backend(args, config, path, available, options, lanes)
    print(f"path: {'IO-binding lanes' if path.io_binding else 'plain session'} ({path.why})")
    print_effective_options(list(path.providers), options)  # once the session exists: a refused run stays one line
    print(f"onnxruntime {backend.version}: providers in use: {', '.join(backend.providers_used)}")
    try:
        return run_eval(args, config, backend, args.onnx_path, dataset, fast_path=lambda t: fast_path_record(path, t))
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(run_main(main))
