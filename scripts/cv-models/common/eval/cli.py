"""Flags and the run/report step shared by every COCO evaluator (ONNX Runtime, TensorRT).

An evaluator script adds its backend flags, builds its backend, and calls ``run_eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from common.core.cli import check_imgsz, check_range
from common.core.errors import UserError
from common.core.notes import collected, warn
from common.core.results import (
    METRICS_SCHEMA_VERSION,
    atomic_write_json,
    check_output_paths,
    image_ids_sha256,
    remove_if_empty,
    run_dir,
    sha256_file,
)
from common.core.sysinfo import run_metadata
from common.data.check import SKIP_FLAG, check_dataset, describe
from common.data.coco import COCO_EVAL_ENGINES, DEFAULT_MAX_IMAGES, CocoDataset, open_dataset, users_metrics
from common.data.loading import ThreadLoaders
from common.eval.options import DECODES, LOADERS, POSTPROCESS_MODES, PREPROCESS_MODES, check_decode, check_loaders
from common.eval.pipeline import EvalOptions, EvalResult, default_workers, detection_head, evaluate
from common.eval.protocols import Backend, LoaderFactory, LoaderPlan
from common.model.yolov10 import LAYOUTS, PostprocessOptions, find_head

__all__ = [
    "ALLOW_IMGSZ_FLAG",
    "DEFAULT_DATA_ROOT",
    "DEFAULT_WARMUP_RUNS",
    "GPU_ORDER_HELP",
    "add_eval_args",
    "check_eval_outputs",
    "check_eval_ranges",
    "check_export_imgsz",
    "check_model_input",
    "check_onnx_args",
    "check_onnx_input",
    "dataset_paths",
    "describe_selection",
    "eval_options",
    "format_report",
    "loader_factory",
    "output_paths",
    "prepare_eval",
    "run_eval",
]

DEFAULT_DATA_ROOT = Path("datasets/coco2017/source-data")
ALLOW_IMGSZ_FLAG = "--allow-imgsz-mismatch"
# Warm-up runs per lane/session (and per partial-last-batch shape) before anything is timed. The first
# run of a CUDA EP session at a new shape pays cuDNN's algorithm search (seconds for yolov10m),
# TensorRT-RTX compiles shape-specialised kernels on its first runs, and a CUDA graph is
# captured after the first plain run; the rest let clocks and the memory arena settle.
DEFAULT_WARMUP_RUNS = 10


GPU_ORDER_HELP = (
    "serial: the GPU runs one batch at a time, as trtexec runs one stream, while the next batches are staged "
    "and uploaded, so latency.* is each batch's own GPU time; overlap: the lanes' GPU work runs concurrently "
    "(more images/s when one batch does not fill the GPU; a batch's time then includes other lanes' work); "
    "auto (default): serial, except ONNX Runtime --io-binding lanes without a CUDA graph below batch 16, "
    "whose runs block the host (overlapping lanes keep the GPU busier there)"
)


def add_eval_args(parser: argparse.ArgumentParser, task: str) -> None:
    """The evaluator flags (the names and defaults of the evaluator this toolkit replaces, and the toolkit's
    own), one argument group each."""
    _add_dataset_args(parser.add_argument_group("dataset"))
    _add_processing_args(parser.add_argument_group("pre/post-processing"))
    _add_run_args(parser.add_argument_group("run"))
    _add_output_args(parser.add_argument_group("outputs"), task)


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
        help="text file of image ids, one per line: all of them are evaluated (duplicates once)",
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
    p.add_argument(
        "--output-format",
        choices=("auto", *LAYOUTS),
        default="auto",
        help="model output layout; auto detects it from the output shape",
    )
    p.add_argument(
        "--output-name",
        default=None,
        help="the model output holding the detections, for a model with several outputs (default: the one output "
        "shaped like a YOLOv10 head; a model where that is not exactly one is refused, naming its outputs)",
    )


def _add_run_args(r: argparse._ArgumentGroup) -> None:
    r.add_argument("--batch-size", type=int, default=1, help="images per inference (dynamic-batch models only)")
    r.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="loaders decoding + letterboxing images; 0 = sequential, no threads (default: %(default)s)",
    )
    r.add_argument(
        "--loaders",
        choices=LOADERS,
        default="threads",
        help="what the --workers are: threads (default; OpenCV releases the GIL while it decodes) or processes "
        "(fresh Python processes writing into shared memory, so this interpreter's GIL only hands over one "
        "message per chunk of images; Linux; for throughput runs on many cores). Same detections either way",
    )
    r.add_argument(
        "--preprocess",
        choices=PREPROCESS_MODES,
        default="cpu",
        help="where the letterbox runs: cpu (default; the reference: OpenCV on the --workers); gpu-normalize "
        "(CPU letterbox in uint8, float conversion on the GPU); gpu-letterbox (resize, pad and /255 in one NVRTC "
        "kernel per batch, in OpenCV's fixed-point INTER_LINEAR arithmetic). Both GPU modes give the model the "
        "same input as cpu, byte for byte. They need a backend with device input buffers (ONNX Runtime "
        "--io-binding, or TensorRT)",
    )
    r.add_argument(
        "--decode",
        choices=DECODES,
        default="cpu",
        help="where the JPEGs are decoded: cpu (default: OpenCV in the --workers threads); gpu (NVIDIA "
        "nvImageCodec, one batch per lane on its stream, read in place by the letterbox kernel; needs "
        "--preprocess gpu-letterbox and pip install 'nvidia-nvimgcodec-cu13[nvjpeg]' (-cu12 for CUDA 12); "
        "pixels may differ from OpenCV's by a grey level)",
    )
    r.add_argument(
        "--postprocess",
        choices=POSTPROCESS_MODES,
        default="auto",
        help="where decode + NMS run: cpu (NumPy, the reference); gpu (NVRTC kernels on the backend's stream, "
        "only the final <= --max-det rows per image come back; ONNX Runtime --io-binding or TensorRT); auto "
        "(default) = gpu where the backend runs on a CUDA device and the kernels compile, else cpu. "
        "metrics.json timings.postprocess_mode says which ran",
    )
    r.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="Python's GIL switch interval during the run (CPython default 5 ms; shorter lets the GPU "
        "threads get the interpreter back sooner)",
    )
    r.add_argument(
        "--warmup-runs",
        type=int,
        default=DEFAULT_WARMUP_RUNS,
        help="inferences on a zero tensor before timing, on every lane/session and for the partial last batch's "
        "shape too (default %(default)s: the first runs pay cuDNN's algorithm search or TensorRT-RTX's kernel "
        "compilation; 0 = none, the first batches' cost then lands in the latency stats)",
    )
    r.add_argument(
        "--latency-runs",
        type=int,
        default=0,
        help="after the evaluation, N back-to-back single-batch runs on one lane, nothing else in flight "
        "(trtexec-style): host and GPU (CUDA-event) median/p90/p99 under latency_pass in metrics.json (default 0: off)",
    )
    r.add_argument("--skip-latency", type=int, default=0, help="drop the first N latency samples from the stats")
    r.add_argument(
        "--coco-eval",
        choices=COCO_EVAL_ENGINES,
        default="auto",
        help="COCOeval implementation; auto = faster-coco-eval when installed (same 12 stats, tested), "
        "else pycocotools",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_output_args(o: argparse._ArgumentGroup, task: str) -> None:
    o.add_argument(
        "--out", type=Path, default=None, help=f"metrics JSON (default: tmp/{task}/<timestamp>/metrics.json)"
    )
    o.add_argument(
        "--detections-out",
        type=Path,
        default=None,
        help="COCO results JSON (default: detections.json beside the default metrics.json)",
    )
    o.add_argument(
        "--task", default=task, help="run folder name under tmp/ when --out is not given (default: %(default)s)"
    )


def dataset_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    instances = args.instances or args.data_root / "annotations" / "instances_val2017.json"
    images = args.images_dir or args.data_root / "val2017"
    return instances, images


def check_eval_ranges(args: argparse.Namespace) -> None:
    """The numeric evaluation flags (shared with validate_e2e.py): UserError naming the flag."""
    check_range("--conf", args.conf, 0, 1)
    check_range("--iou", args.iou, 0, 1, lo_open=True)
    check_range("--max-det", args.max_det, 1)
    check_range("--pre-nms-topk", getattr(args, "pre_nms_topk", None), 1)
    check_range("--batch-size", getattr(args, "batch_size", None), 1)
    check_range("--workers", args.workers, 0)
    check_range("--warmup-runs", args.warmup_runs, 0)
    check_range("--latency-runs", getattr(args, "latency_runs", None), 0)
    check_range("--skip-latency", getattr(args, "skip_latency", None), 0)
    check_range("--switch-interval-ms", getattr(args, "switch_interval_ms", None), 0, lo_open=True)
    check_decode(getattr(args, "decode", "cpu"), getattr(args, "preprocess", "cpu"))
    check_loaders(getattr(args, "loaders", "threads"), getattr(args, "decode", "cpu"))
    if getattr(args, "decode", "cpu") == "gpu":
        from common.throughput.gpu_decode import import_nvimgcodec

        import_nvimgcodec()  # UserError saying how to install it, before any work
    if args.imgsz <= 0:
        check_imgsz("--imgsz", args.imgsz)


def check_model_input(label: str, name: str, shape: Sequence[Any], dtype: Any, imgsz: int) -> None:
    """What the evaluator feeds: one float32 [N,3,H,W] tensor (RGB, /255). UserError saying so otherwise."""
    need = "one float32 input [N,3,H,W] (RGB scaled to [0,1]); export the model with such an input"
    dims = list(shape)
    if np.dtype(dtype) != np.float32:
        raise UserError(f"{label}: input {name!r} is {np.dtype(dtype)} {dims}; the evaluator needs {need}")
    if len(dims) != 4 or dims[1] not in (3, None):
        raise UserError(f"{label}: input {name!r} has shape {dims}; the evaluator needs {need}")
    hw = {d for d in dims[2:] if d is not None}
    fixed = hw.pop() if len(hw) == 1 and None not in dims[2:] else None
    if fixed is not None and imgsz != fixed:
        raise UserError(f"--imgsz {imgsz} does not match {label}'s input {dims}; pass --imgsz {fixed}")
    check_imgsz("--imgsz", imgsz, fixed)


def check_onnx_input(
    flag: str,
    path: Path,
    imgsz: int,
    *,
    output_format: str = "auto",
    output_name: str | None = None,
    allow_imgsz_mismatch: bool = False,
) -> None:
    """What the evaluator needs of an ONNX file, read from its graph (cheap: no weights loaded) before a
    session or build: ``check_model_input`` on its input, its detection head among its outputs
    (``find_head``), and ``--imgsz`` against the size it was exported at (``check_export_imgsz``)."""
    if path.suffix != ".onnx" or not path.is_file():
        return  # the backend reports a missing/foreign file with its own message
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{flag} {path} is not a readable ONNX model ({first})") from None
    _check_onnx_graph_input(flag, path, model, imgsz)
    outputs = [(o.name, _dims(o)) for o in model.graph.output]
    head = find_head(outputs, output_format, output_name)
    if len(outputs) > 1 and output_name is None:
        warn(
            f"{flag} {path} has {len(outputs)} outputs; evaluating {outputs[head][0]} {list(outputs[head][1])}, the "
            "one shaped like a YOLOv10 detection head (--output-name NAME chooses another)"
        )
    meta = {p.key: p.value for p in model.metadata_props}
    check_export_imgsz(f"{flag} {path}", imgsz, meta.get("imgsz"), allow_imgsz_mismatch)


def check_onnx_args(flag: str, path: Path, args: argparse.Namespace) -> None:
    """``check_onnx_input`` with an evaluator's flags."""
    check_onnx_input(
        flag,
        path,
        args.imgsz,
        output_format=args.output_format,
        output_name=getattr(args, "output_name", None),
        allow_imgsz_mismatch=getattr(args, "allow_imgsz_mismatch", False),
    )


def _dims(value_info: Any) -> list[int | None]:
    return [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        for d in value_info.type.tensor_type.shape.dim
    ]


def check_export_imgsz(label: str, imgsz: int, recorded: str | None, allow: bool = False) -> None:
    """``--imgsz`` against the square size the model was exported at (Ultralytics writes ``imgsz`` into the
    ONNX metadata, e.g. ``[640, 640]``): a UserError naming both, unless ``allow`` (then a warning)."""
    try:
        value = json.loads(recorded) if recorded else None
    except ValueError:
        return
    sizes = value if isinstance(value, list) else [value, value]
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or not all(isinstance(v, int) and v > 0 for v in sizes) or sizes[0] != sizes[1]:
        return  # absent, or not a square size this evaluator runs at
    if imgsz == sizes[0]:
        return
    what = f"--imgsz {imgsz} differs from the size {label} was exported at ({sizes[0]}, ONNX metadata imgsz {recorded})"
    if not allow:
        raise UserError(f"{what}; pass --imgsz {sizes[0]}, or {ALLOW_IMGSZ_FLAG} to evaluate at {imgsz} knowingly")
    warn(f"{what}: evaluating at {imgsz} as {ALLOW_IMGSZ_FLAG} asks; the mAP is that of another input size")


def _check_onnx_graph_input(flag: str, path: Path, model: Any, imgsz: int) -> None:
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"{flag} {path} has {len(inputs)} inputs; a YOLO model has one float32 [N,3,H,W] input")
    vi = inputs[0]
    tt = vi.type.tensor_type
    dims = _dims(vi)
    try:
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
    except (KeyError, ValueError, TypeError):
        dtype = np.dtype("V")
    check_model_input(f"{flag} {path}", vi.name, dims, dtype, imgsz)


def check_eval_outputs(args: argparse.Namespace, model_inputs: dict[str, Path | None]) -> None:
    """The output-path guard for an evaluator run (before any work): --out / --detections-out may not be
    an input (model, instances, id list, an image) or each other, nor an existing directory."""
    instances, images = dataset_paths(args)
    check_output_paths(
        {"--out": args.out, "--detections-out": args.detections_out},
        {**model_inputs, "--instances": instances, "--image-ids-list": args.image_ids_list},
        protected_dirs={"--images-dir": images},
    )


def prepare_eval(args: argparse.Namespace, model_inputs: dict[str, Path | None]) -> CocoDataset:
    """Every usage check of an evaluator run, before a backend is made or an engine built: the flag
    ranges, the output paths, the dataset (instances file, images, selected ids) and its check
    (``common.data.check``: the selected images' headers and annotations). Returns the dataset."""
    check_eval_ranges(args)
    check_eval_outputs(args, model_inputs)
    instances, images = dataset_paths(args)
    dataset = open_dataset(instances, images, args.max_images, args.image_ids_list)
    dataset.check_report = check_dataset(dataset, getattr(args, "skip_unreadable_images", False))
    return dataset


def eval_options(args: argparse.Namespace) -> EvalOptions:
    check_eval_ranges(args)
    return EvalOptions(
        imgsz=args.imgsz,
        batch_size=args.batch_size,
        workers=args.workers,
        output_format=args.output_format,
        post=PostprocessOptions(args.conf, args.iou, args.max_det, args.pre_nms_topk),
        warmup_runs=args.warmup_runs,
        skip_latency=args.skip_latency,
        progress=not args.no_progress and sys.stderr.isatty(),
        coco_engine=args.coco_eval,
        preprocess=getattr(args, "preprocess", "cpu"),
        decode=getattr(args, "decode", "cpu"),
        loaders=getattr(args, "loaders", "threads"),
        switch_interval_ms=getattr(args, "switch_interval_ms", None),
        postprocess=getattr(args, "postprocess", "auto"),
        latency_runs=getattr(args, "latency_runs", 0) or 0,
        output_name=getattr(args, "output_name", None),
    )


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
    return None


def output_paths(args: argparse.Namespace) -> tuple[Path, Path | None, Path | None]:
    """(metrics, detections or None, the run folder made for them or None)."""
    if args.out is not None:
        return args.out, args.detections_out, None
    folder = run_dir(args.task)  # created exclusively: a run of its own
    return folder / "metrics.json", args.detections_out or folder / "detections.json", folder


def describe_selection(args: argparse.Namespace, ids: Sequence[int]) -> str:
    """One line saying which images run, e.g. ``images: 150 from --image-ids-list ids.txt (3, 1, 2, ...)``."""
    shown = ", ".join(map(str, ids[:8])) + (", ..." if len(ids) > 8 else "")
    if args.image_ids_list is not None:
        source = f"from --image-ids-list {args.image_ids_list}"
    elif args.max_images is None or args.max_images > 0:
        n = DEFAULT_MAX_IMAGES if args.max_images is None else args.max_images
        source = f"first {n} by id" + (" (default --max-images)" if args.max_images is None else "")
    else:
        source = "all"
    return f"images: {len(ids)} ({source}; ids {shown})"


def format_report(result: EvalResult, metrics: dict[str, Any], backend: Backend, dataset: CocoDataset) -> str:
    t = result.timings
    check = f"{describe(dataset.check_report)}" if dataset.check_report is not None else "not run"
    lines = [
        result.summary_table.rstrip(),
        "",
        f"{'backend':<22}{backend.name}",
        f"{'layout':<22}{result.layout}",
        f"{'images':<22}{result.num_images}",
        f"{'detections':<22}{metrics['num_detections']}",
        f"{'mAP50-95 / mAP50':<22}{metrics['mAP_50_95']:.4f} / {metrics['mAP_50']:.4f}",
        f"{'inference ms':<22}median {t['inference']['median_ms']:.2f}  p90 {t['inference']['p90_ms']:.2f}  "
        f"p99 {t['inference']['p99_ms']:.2f}  (batch {result.batch_size})",
        f"{'preprocess ms/img':<22}median {t['preprocess']['median_ms']:.2f}  "
        f"({t['workers']} {t.get('loaders', 'threads')} workers, overlapped)",
        f"{'latency ms':<22}median {t['latency']['median_ms']:.2f}  p90 {t['latency']['p90_ms']:.2f}  "
        f"p99 {t['latency']['p99_ms']:.2f}  ({t['latency_timing'].split(':')[0]})",
        f"{'postprocess ms/batch':<22}median {t['postprocess']['median_ms']:.2f}  "
        f"({t['postprocess_mode']}, overlapped)",
        f"{'end to end':<22}{t['end_to_end_images_per_s']:.1f} img/s  ({t['wall_seconds']:.2f} s)",
        f"{'COCOeval':<22}{t['eval_seconds']:.2f} s",
        f"{'dataset check':<22}{check}",
    ]
    return "\n".join(lines)


def run_eval(
    args: argparse.Namespace,
    backend: Backend,
    model_path: Path,
    extra_run: dict[str, Any] | None = None,
    dataset: CocoDataset | None = None,
) -> int:
    """Evaluate, print the report, and write metrics.json (+ detections) atomically.

    The scripts call ``prepare_eval`` first, before a backend is made, and pass its dataset; a caller
    that comes straight here gets the same checks.
    """
    instances, images = dataset_paths(args)
    if dataset is None:
        dataset = prepare_eval(args, {"model": model_path})
    spec = backend.input
    check_model_input(str(model_path), spec.name, spec.shape, spec.dtype, args.imgsz)
    opts = eval_options(args)
    print(describe_selection(args, dataset.image_ids))
    metrics_path, detections_path, folder = output_paths(args)
    try:
        result = evaluate(backend, dataset, opts, loader_factory(opts))
    except BaseException:
        remove_if_empty(folder)
        raise
    metrics = users_metrics(result.stats, result.num_images, result.num_detections)
    lat = result.timings["latency"]
    payload: dict[str, Any] = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "model_path": str(model_path),
        "data_root": str(args.data_root),
        "instances": str(instances),
        "images_dir": str(images),
        "imgsz": args.imgsz,
        "max_images": args.max_images,
        "image_ids_list": str(args.image_ids_list) if args.image_ids_list else None,
        "image_ids": list(dataset.image_ids),
        "image_ids_sha256": image_ids_sha256(dataset.image_ids),
        "dataset_check": dataset.check_report.to_dict() if dataset.check_report is not None else None,
        "warmup_runs": args.warmup_runs,
        "skip_latency": args.skip_latency,
        "conf": args.conf,
        "iou": args.iou,
        "max_det": args.max_det,
        "pre_nms_topk": args.pre_nms_topk,
        "batch_size": result.batch_size,
        "metrics": metrics,
        "latency": lat,
        "latency_timing": result.timings["latency_timing"],
        "postprocess": result.timings["postprocess_mode"],
        **({"latency_pass": result.timings["latency_pass"]} if "latency_pass" in result.timings else {}),
        "timings": result.timings,
        "run": {
            "model_sha256": sha256_file(model_path) if model_path.is_file() else None,
            "output_layout": result.layout,
            "output_name": backend.outputs[detection_head(backend, opts)].name,
            "backend": backend.metadata(),
            **run_metadata(),
            **(extra_run or {}),
        },
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    payload["warnings"] = collected()
    print(format_report(result, metrics, backend, dataset))
    if detections_path is not None:
        atomic_write_json(detections_path, result.detections, indent=None)
        print(f"detections: {detections_path}")
    atomic_write_json(metrics_path, payload)
    print(f"metrics:    {metrics_path}")
    return 0
