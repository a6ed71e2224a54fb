"""Flags and the run/report step shared by every COCO evaluator (ONNX Runtime, TensorRT).

An evaluator script adds its flags (``add_eval_args``), parses them once into option objects (``eval_config``),
refuses bad outputs and opens the dataset (``open_data``), builds its backend, and calls ``run_eval``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.core.cli import output_file
from common.data.check import SKIP_FLAG
from common.data.coco import COCO_EVAL_ENGINES, DEFAULT_MAX_IMAGES, CocoDataset
from common.data.loading import ThreadLoaders, thread_loaders
from common.eval.api import evaluate_to_files, open_data
from common.eval.checks import ALLOW_IMGSZ_FLAG, check_model_input, check_onnx_input
from common.eval.options import (
    CPU_WARMUP_RUNS,
    DECODES,
    DEFAULT_DATA_ROOT,
    GPU_ORDERS,
    GPU_WARMUP_RUNS,
    LANE_THREADS,
    LANE_WAITS,
    LOADERS,
    POSTPROCESS_MODES,
    PREPROCESS_CHOICES,
    PROCESS_LOADERS_MIN_CORES,
    PROCESS_LOADERS_MIN_IMAGES,
    DataOptions,
    EvalOptions,
    OutputOptions,
    default_workers,
)
from common.eval.protocols import Backend, LoaderFactory, LoaderPlan, Loaders
from common.model.yolov10 import LAYOUTS, PostprocessOptions

__all__ = [
    "ALLOW_IMGSZ_FLAG",
    "DEFAULT_DATA_ROOT",
    "DEFAULT_WARMUP_RUNS",
    "THROUGHPUT_GROUP",
    "EvalConfig",
    "add_eval_args",
    "add_head_flags",
    "add_lane_flags",
    "auto_or_count",
    "check_onnx_args",
    "check_onnx_input",
    "data_options",
    "describe_selection",
    "eval_config",
    "loader_factory",
    "open_data",
    "run_eval",
    "warmup_runs_arg",
]

DEFAULT_WARMUP_RUNS = GPU_WARMUP_RUNS  # --warmup-runs auto on a GPU (common.eval.options.resolve_warmup_runs)


def auto_or_count(what: str) -> Callable[[str], int | str]:
    """An argparse ``type``: ``auto``, or an integer (``what`` names it in the refusal, e.g. ``a number of
    runs``); ranges are checked where the flag is used."""

    def parse(value: str) -> int | str:
        if value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected auto or {what}, got {value!r}") from None

    return parse


warmup_runs_arg = auto_or_count("a number of runs")  # --warmup-runs


LANE_WAIT_HELP = "lane threads spin (default; trtexec --useSpinWait) or sleep while their batch runs"
LANE_THREADS_HELP = "per-lane (default): a thread per lane; main: the main thread drives every lane"
GPU_ORDER_HELP = (
    "serial: the GPU runs one batch at a time, as trtexec runs one stream, while the next batches are staged "
    "and uploaded, so latency.* is each batch's own GPU time; overlap: the lanes' GPU work runs concurrently "
    "(more images/s when one batch does not fill the GPU); latency.* is then a lone batch's GPU time, from "
    "the latency pass after the run (--latency-runs, else 50 runs); "
    "auto (default): serial, except ONNX Runtime --io-binding lanes without a CUDA graph below batch 16, "
    "whose runs block the host, and lanes replaying CUDA graphs at batch 1, which one image does not fill "
    "(overlapping lanes keep the GPU busier there)"
)


def add_lane_flags(group: argparse._ArgumentGroup, when: str) -> None:
    """``--gpu-order``, ``--lane-wait`` and ``--lane-threads``, the flags every lane-backed evaluator shares;
    ``when``: the condition under which they apply, which their help opens with (e.g. ``with --io-binding``)."""
    group.add_argument("--gpu-order", choices=GPU_ORDERS, default="auto", help=f"{when}: {GPU_ORDER_HELP}")
    group.add_argument("--lane-wait", choices=LANE_WAITS, default="spin", help=f"{when}: {LANE_WAIT_HELP}")
    group.add_argument("--lane-threads", choices=LANE_THREADS, default="per-lane", help=f"{when}: {LANE_THREADS_HELP}")


THROUGHPUT_GROUP = "throughput tuning (the defaults pick the fast path where it runs; same detections)"


def add_eval_args(parser: argparse.ArgumentParser, task: str) -> argparse._ArgumentGroup:
    """The evaluator flags (the names and defaults of the evaluator this toolkit replaces, and the toolkit's
    own), one argument group each: the everyday groups first, then the throughput tuning group, which is
    returned so that a script adds its own throughput flags there (execution-provider tuning goes after it)."""
    _add_dataset_args(parser.add_argument_group("dataset"))
    _add_processing_args(parser.add_argument_group("pre/post-processing"))
    _add_run_args(parser.add_argument_group("run"))
    _add_output_args(parser.add_argument_group("outputs"), task)
    throughput = parser.add_argument_group(THROUGHPUT_GROUP)
    _add_throughput_args(throughput)
    return throughput


def _add_dataset_args(d: argparse._ArgumentGroup) -> None:
    d.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="COCO root holding val2017/ and annotations/instances_val2017.json (default: %(default)s)",
    )
    d.add_argument(
        "--instances",
        type=Path,
        default=None,
        help="instances JSON (default: <data-root>/annotations/instances_val2017.json)",
    )
    d.add_argument("--images-dir", type=Path, default=None, help="image folder (default: <data-root>/val2017)")
    d.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="evaluate the first N images by id; <= 0: all (default 100; with --image-ids-list: the whole list)",
    )
    d.add_argument(
        "--image-ids-list",
        type=Path,
        default=None,
        help="text file of image ids, one per line: all of them are evaluated (duplicates once; default: none)",
    )
    d.add_argument(
        SKIP_FLAG,
        action="store_true",
        help="leave missing or unreadable images out of the evaluation (listed in metrics.json "
        "dataset_check.skipped_images) instead of refusing the run (default: refuse)",
    )


def _add_processing_args(p: argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--imgsz",
        type=int,
        default=640,
        help="square network input size: a multiple of 32, or the model's fixed size (default 640); a size "
        "other than the one in the ONNX metadata (imgsz, written by Ultralytics' export) is refused unless "
        f"{ALLOW_IMGSZ_FLAG}",
    )
    p.add_argument(
        ALLOW_IMGSZ_FLAG,
        action="store_true",
        help="evaluate at an --imgsz other than the ONNX model's exported size (a warning in metrics.json instead "
        "of a refusal; default: refuse)",
    )
    p.add_argument("--conf", type=float, default=0.001, help="score threshold in [0, 1] (default 0.001)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold in (0, 1] (default 0.7)")
    p.add_argument("--max-det", type=int, default=300, help="max detections per image, >= 1 (default 300)")
    p.add_argument("--pre-nms-topk", type=int, default=30000, help="candidates kept before NMS, >= 1 (default 30000)")
    add_head_flags(p)


def add_head_flags(group: argparse._ArgumentGroup) -> None:
    """``--output-format`` and ``--output-name``: which model output holds the detections, in which layout."""
    group.add_argument(
        "--output-format",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="model output layout (default: auto, detected from the output shape)",
    )
    group.add_argument(
        "--output-name",
        default=None,
        help="the model output holding the detections, for a model with several outputs (default: the one output "
        "shaped like a YOLOv10 head; a model where that is not exactly one is refused, naming its outputs)",
    )


def _add_run_args(r: argparse._ArgumentGroup) -> None:
    r.add_argument(
        "--batch-size", type=int, default=1, help="images per inference (dynamic-batch models only; default 1)"
    )
    r.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="loaders decoding + letterboxing images; 0 = sequential, no threads (default: %(default)s)",
    )
    _add_timing_args(r)
    r.add_argument(
        "--coco-eval",
        choices=COCO_EVAL_ENGINES,
        default="auto",
        help="COCOeval implementation (default %(default)s = stream: matched batch by batch while the next "
        "ones run, pycocotools' 12 stats exactly); pycocotools: the reference, run whole at the end; "
        "faster-coco-eval (if installed): pycocotools' stats to 1e-6",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_throughput_args(t: argparse._ArgumentGroup) -> None:
    t.add_argument(
        "--loaders",
        choices=LOADERS,
        default="auto",
        help="what the --workers are: threads or processes (Linux: fresh processes writing into shared memory, for "
        f"throughput runs on many cores); auto (default): processes for a run of at least {PROCESS_LOADERS_MIN_IMAGES} "
        f"images with the letterbox on the GPU on a machine of at least {PROCESS_LOADERS_MIN_CORES} cores, else "
        "threads (metrics.json timings.loaders says which ran)",
    )
    t.add_argument(
        "--preprocess",
        choices=PREPROCESS_CHOICES,
        default="auto",
        help="where the letterbox runs: cpu (the reference: OpenCV on the --workers); gpu-normalize (float "
        "conversion on the GPU) or gpu-letterbox (all of it in one kernel per batch), the same input byte for byte, "
        "need --io-binding or TensorRT; auto (default) = gpu-letterbox where the backend can, else cpu "
        "(metrics.json timings.preprocess_mode says which ran)",
    )
    t.add_argument(
        "--decode",
        choices=DECODES,
        default="cpu",
        help="where the JPEGs are decoded: cpu (default: OpenCV); gpu (nvImageCodec; needs --preprocess "
        "gpu-letterbox or auto and pip install 'nvidia-nvimgcodec-cu13[nvjpeg]'; pixels may differ by a grey level)",
    )
    t.add_argument(
        "--postprocess",
        choices=POSTPROCESS_MODES,
        default="auto",
        help="where decode + NMS run: cpu (NumPy, the reference); gpu (kernels on the backend's stream; "
        "--io-binding or TensorRT); auto (default) = gpu where the backend can, else cpu (metrics.json "
        "timings.postprocess_mode says which ran)",
    )
    t.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="the GIL switch interval during the run (default 5 ms)",
    )


def _add_timing_args(r: argparse._ArgumentGroup) -> None:
    """Warm-up and latency flags."""
    r.add_argument(
        "--warmup-runs",
        type=warmup_runs_arg,
        default="auto",
        help="inferences on a zero tensor before timing, on every lane/session, for each batch shape the run "
        f"has (never a batch larger than the selected images); auto (default): {CPU_WARMUP_RUNS} on the ONNX "
        f"Runtime CPU EP, {GPU_WARMUP_RUNS} on a GPU (the first runs pay cuDNN's algorithm search or TensorRT-RTX's "
        "kernel compilation); 0 = none, the first batches' cost then lands in the latency stats. metrics.json "
        "warmup_runs records the count used",
    )
    r.add_argument(
        "--latency-runs",
        type=int,
        default=0,
        help="after the evaluation, N back-to-back single-batch runs on one lane, nothing else in flight "
        "(trtexec-style): host and GPU (CUDA-event) median/p90/p99 under latency_pass in metrics.json (default 0: "
        "off, except where the lanes overlap on the GPU: then 50 runs, and latency.* comes from them)",
    )
    r.add_argument(
        "--skip-latency",
        type=int,
        default=0,
        help="drop the first N latency samples (batches) from the stats; N must leave at least one (default 0)",
    )


def _add_output_args(o: argparse._ArgumentGroup, task: str) -> None:
    o.add_argument(
        "--out",
        type=output_file("metrics.json"),
        default=None,
        help=f"metrics JSON; DIR/ means DIR/metrics.json (default: tmp/{task}/<timestamp>/metrics.json). An "
        "existing file is replaced only when this toolkit wrote it, or with --force",
    )
    o.add_argument(
        "--detections-out",
        type=output_file("detections.json"),
        default=None,
        help="COCO results JSON; DIR/ means DIR/detections.json (default: detections.json beside the default "
        "metrics.json)",
    )
    o.add_argument(
        "--task", default=task, help="run folder name under tmp/ when --out is not given (default: %(default)s)"
    )


@dataclass(frozen=True)
class EvalConfig:
    """An evaluator command line's options, parsed once."""

    data: DataOptions
    eval: EvalOptions
    out: OutputOptions


def data_options(args: argparse.Namespace) -> DataOptions:
    """The data-selection flags (``add_eval_args``' dataset group) as a validated ``DataOptions``."""
    return DataOptions(
        args.data_root,
        args.instances,
        args.images_dir,
        args.max_images,
        args.image_ids_list,
        args.skip_unreadable_images,
    )


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The evaluator flags as validated option objects (``OptionError`` naming the flag's parameter).
    ``--decode gpu`` also checks that nvImageCodec imports, before any work."""
    config = EvalConfig(
        data=data_options(args),
        eval=EvalOptions(
            imgsz=args.imgsz,
            batch_size=args.batch_size,
            workers=args.workers,
            output_format=args.output_format,
            post=PostprocessOptions(args.conf, args.iou, args.max_det, args.pre_nms_topk),
            warmup_runs=args.warmup_runs,
            skip_latency=args.skip_latency,
            progress=not args.no_progress and sys.stderr.isatty(),
            coco_engine=args.coco_eval,
            preprocess=args.preprocess,
            decode=args.decode,
            loaders=args.loaders,
            switch_interval_ms=args.switch_interval_ms,
            postprocess=args.postprocess,
            latency_runs=args.latency_runs,
            output_name=args.output_name,
        ),
        out=OutputOptions(args.task, args.out, args.detections_out, getattr(args, "force", False)),
    )
    if config.eval.decode == "gpu":
        from common.throughput.gpu_decode import import_nvimgcodec

        import_nvimgcodec()  # UserError saying how to install it, before any work
    return config


def loader_factory(opts: EvalOptions) -> LoaderFactory | None:
    """The image loaders ``opts`` asks for, from the throughput wing where it must (None: the default threads).

    ``--decode gpu``: threads that only read the files (the lanes decode); ``--loaders processes``: fresh
    Python processes writing into a shared-memory ring."""
    if opts.decode == "gpu":
        from common.throughput.gpu_decode import load_encoded_chunk

        def encoded(plan: LoaderPlan) -> ThreadLoaders:
            return ThreadLoaders(plan.workers, plan.size, plan.mode, plan.decode, load_encoded_chunk)

        return encoded
    if opts.loaders == "processes":
        from common.throughput.loader_processes import process_loaders

        return process_loaders
    if opts.loaders == "auto":
        return _resolved_loaders
    return None


def _resolved_loaders(plan: LoaderPlan) -> Loaders:
    """``--loaders auto``: the kind the run resolved (``common.eval.options.resolve_loaders``)."""
    if plan.loaders == "processes":
        from common.throughput.loader_processes import process_loaders

        return process_loaders(plan)
    return thread_loaders(plan)


def check_onnx_args(flag: str, path: Path, args: argparse.Namespace) -> None:
    """``check_onnx_input`` with an evaluator's flags."""
    check_onnx_input(
        flag,
        path,
        args.imgsz,
        output_format=args.output_format,
        output_name=args.output_name,
        allow_imgsz_mismatch=args.allow_imgsz_mismatch,
    )


def describe_selection(data: DataOptions, ids: Sequence[int]) -> str:
    """One line saying which images run, e.g. ``images: 150 from --image-ids-list ids.txt (3, 1, 2, ...)``."""
    shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
    if data.image_ids_list is not None:
        source = f"from --image-ids-list {data.image_ids_list}"
    elif data.max_images is None or data.max_images > 0:
        n = DEFAULT_MAX_IMAGES if data.max_images is None else data.max_images
        source = f"first {n} by id" + (" (default --max-images)" if data.max_images is None else "")
    else:
        source = "all"
    return f"images: {len(ids)} ({source}; ids {shown})"


def run_eval(
    args: argparse.Namespace,
    config: EvalConfig,
    backend: Backend,
    model_path: Path,
    dataset: CocoDataset,
    extra_run: dict[str, Any] | None = None,
    fast_path: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    record_extra: dict[str, Any] | None = None,
) -> int:
    """The evaluator command's last step: check the model's input, say which images run, evaluate and write
    metrics.json (``common.eval.api.evaluate_to_files``), the command line kept under ``args`` (plus
    ``record_extra``: what the command chose without a flag, e.g. the demo's model and providers); ``fast_path``:
    metrics.json ``run.fast_path`` from the timings (``common.eval.fast_path``)."""
    spec = backend.input
    check_model_input(str(model_path), spec.name, spec.shape, spec.dtype, config.eval.imgsz)
    print(describe_selection(config.data, dataset.image_ids))
    evaluate_to_files(
        backend,
        model_path,
        dataset,
        config.data,
        config.eval,
        config.out,
        extra_run,
        args_record={**vars(args), **(record_extra or {})},
        loaders=loader_factory(config.eval),
        fast_path=fast_path,
    )
    return 0
