"""Evaluate a model on COCO and write metrics.json: the library the evaluator CLIs, demo and validate call.

``open_data(data, out, model_inputs)`` refuses bad outputs and opens the dataset (before any model work);
``evaluate_to_files(backend, model_path, dataset, data, opts, out)`` evaluates, prints the report and writes
metrics.json (+ detections) atomically; ``evaluate_onnx(model, data, opts, out)`` does both for an ONNX model
with ONNX Runtime, ``evaluate_engine(engine, data, opts, out, api)`` for a TensorRT / TensorRT-RTX engine (one
plain runner: one execution context, one stream, one batch at a time).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.core.errors import UserError
from common.core.notes import collected
from common.core.results import (
    METRICS_SCHEMA_VERSION,
    atomic_write_json,
    check_output_paths,
    file_digests,
    image_ids_sha256,
    remove_if_empty,
    run_dir,
    sha256_file,
    stamp,
)
from common.core.sysinfo import run_metadata
from common.data.check import check_dataset
from common.data.coco import CocoDataset, open_dataset, users_metrics, write_results_json
from common.eval.options import DataOptions, EvalOptions, OutputOptions
from common.eval.pipeline import EvalResult, detection_head, evaluate
from common.eval.protocols import Backend, LoaderFactory
from common.eval.report import format_report

if TYPE_CHECKING:
    from common.trt.api import TrtApi

__all__ = [
    "EvalRun",
    "check_skip_latency",
    "evaluate_engine",
    "evaluate_onnx",
    "evaluate_to_files",
    "open_data",
    "output_paths",
]


class EvalRun:
    """What an evaluation wrote: the result, the metrics.json payload and where it went."""

    def __init__(self, result: EvalResult, payload: dict[str, Any], metrics_path: Path, detections: Path | None):
        self.result = result
        self.payload = payload
        self.metrics_path = metrics_path
        self.detections_path = detections


def open_data(
    data: DataOptions,
    out: OutputOptions,
    model_inputs: Mapping[str, Path | None],
    opts: EvalOptions | None = None,
) -> CocoDataset:
    """The output-path guard (``common.core.results.check_output_paths``: outputs may not be an input or each
    other, nor an existing directory or a file this toolkit did not write unless ``out.force``), the dataset
    (instances file, images, selected ids) and its check (``common.data.check``: the selected images' headers
    and annotations), and, given ``opts``, that ``skip_latency`` leaves a batch to time -- before a backend is
    made or an engine built."""
    check_output_paths(
        {"--out": out.out, "--detections-out": out.detections_out},
        {**model_inputs, "--instances": data.instances_path, "--image-ids-list": data.image_ids_list},
        protected_dirs={"--images-dir": data.images_path},
        force=out.force,
        vouchers=[out.out],  # our metrics.json records the detections written with it
    )
    dataset = open_dataset(data.instances_path, data.images_path, data.max_images, data.image_ids_list)
    dataset.check_report = check_dataset(dataset, data.skip_unreadable_images)
    if opts is not None:
        check_skip_latency(opts.skip_latency, len(dataset.image_ids), opts.batch_size)
    return dataset


def check_skip_latency(skip: int, images: int, batch_size: int) -> None:
    """``skip_latency`` must leave at least one batch's latency to report (refused before any work)."""
    batches = -(-images // max(1, batch_size))
    if skip >= batches:
        raise UserError(
            f"--skip-latency {skip} would drop every latency sample: the run has {batches} batch(es) ({images} "
            f"images at --batch-size {batch_size}); pass --skip-latency {batches - 1} or less"
        )


def output_paths(out: OutputOptions) -> tuple[Path, Path | None, Path | None]:
    """(metrics, detections or None, the run folder made for them or None)."""
    if out.out is not None:
        return out.out, out.detections_out, None
    folder = run_dir(out.task)  # created exclusively: a run of its own
    return folder / "metrics.json", out.detections_out or folder / "detections.json", folder


def evaluate_to_files(
    backend: Backend,
    model_path: Path,
    dataset: CocoDataset,
    data: DataOptions,
    opts: EvalOptions,
    out: OutputOptions,
    extra_run: Mapping[str, Any] | None = None,
    args_record: Mapping[str, Any] | None = None,
    loaders: LoaderFactory | None = None,
    fast_path: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> EvalRun:
    """Evaluate, print the report, and write metrics.json (+ detections) atomically.

    ``args_record``: the command line's options, kept under ``args`` in metrics.json (default: the options);
    ``loaders``: the image loaders (None: threads decoding with OpenCV); ``fast_path(timings)``: what
    metrics.json ``run.fast_path`` holds (``common.eval.fast_path.fast_path_record``), made from the
    evaluation's timings (where ``auto`` pre- and post-processing resolved)."""
    metrics_path, detections_path, folder = output_paths(out)
    try:
        result = evaluate(backend, dataset, opts, loaders)
    except BaseException:
        remove_if_empty(folder)
        raise
    payload = _payload(result, backend, model_path, dataset, data, opts, extra_run)
    if fast_path is not None:
        payload["run"]["fast_path"] = fast_path(result.timings)
    record = args_record if args_record is not None else {**asdict(data), **asdict(opts), **asdict(out)}
    payload["args"] = {k: str(v) if isinstance(v, Path) else v for k, v in record.items()}
    payload["warnings"] = collected()
    print(format_report(result, payload["metrics"], backend, dataset))
    written = {}
    if detections_path is not None:
        write_results_json(detections_path, result.rows)
        written = file_digests(detections_path)  # metrics.json vouches for it (the output policy)
        print(f"detections: {detections_path}")
    atomic_write_json(metrics_path, stamp(payload, written))
    print(f"metrics:    {metrics_path}")
    return EvalRun(result, payload, metrics_path, detections_path)


def _payload(
    result: EvalResult,
    backend: Backend,
    model_path: Path,
    dataset: CocoDataset,
    data: DataOptions,
    opts: EvalOptions,
    extra_run: Mapping[str, Any] | None,
) -> dict[str, Any]:
    t = result.timings
    return {
        "schema_version": METRICS_SCHEMA_VERSION,
        "model_path": str(model_path),
        "data_root": str(data.data_root),
        "instances": str(data.instances_path),
        "images_dir": str(data.images_path),
        "imgsz": opts.imgsz,
        "max_images": data.max_images,
        "image_ids_list": str(data.image_ids_list) if data.image_ids_list else None,
        "image_ids": list(dataset.image_ids),
        "image_ids_sha256": image_ids_sha256(dataset.image_ids),
        "dataset_check": dataset.check_report.to_dict() if dataset.check_report is not None else None,
        "warmup_runs": t["warmup_runs"],
        "warmup_runs_requested": opts.warmup_runs,
        "skip_latency": opts.skip_latency,
        "conf": opts.post.conf,
        "iou": opts.post.iou,
        "max_det": opts.post.max_det,
        "pre_nms_topk": opts.post.pre_nms_topk,
        "batch_size": result.batch_size,
        "metrics": users_metrics(result.stats, result.num_images, result.num_detections),
        "latency": t["latency"],
        "latency_timing": t["latency_timing"],
        "postprocess": t["postprocess_mode"],
        **({"latency_pass": t["latency_pass"]} if "latency_pass" in t else {}),
        "timings": t,
        "run": {
            "model_sha256": sha256_file(model_path) if model_path.is_file() else None,
            "output_layout": result.layout,
            "output_name": backend.outputs[detection_head(backend, opts)].name,
            "backend": backend.metadata(),
            **run_metadata(),
            **(extra_run or {}),
        },
    }


def evaluate_onnx(
    model: Path,
    data: DataOptions,
    opts: EvalOptions,
    out: OutputOptions,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    provider_options: Mapping[str, Mapping[str, str]] | None = None,
    *,
    require_accelerator: bool = False,
    allow_imgsz_mismatch: bool = False,
    after: Callable[[Backend], None] | None = None,
) -> EvalRun:
    """Evaluate an ONNX model with ONNX Runtime (plain session: ``providers`` in priority order).

    ``require_accelerator``: refuse the run when the first accelerator EP does not initialise;
    ``after``: called with the backend once metrics.json is written (before the session closes)."""
    from common.ort.options import CPU_EP, available_providers
    from common.ort.session import OrtBackend

    dataset = open_data(data, out, {"--onnx-path": model}, opts)
    _check_onnx(model, opts, allow_imgsz_mismatch)
    available = available_providers()
    gpu_first = bool(providers) and providers[0] != CPU_EP and providers[0] in available
    backend = OrtBackend(
        str(model),
        list(providers),
        {k: dict(v) for k, v in (provider_options or {}).items()},
        available=available,
        intra_op_threads=1 if gpu_first else None,  # one CPU thread feeds a GPU EP
        require_accelerator=require_accelerator,
    )
    try:
        return _evaluate_and_then(backend, model, dataset, data, opts, out, None, after)
    finally:
        backend.close()


def evaluate_engine(
    engine: Path,
    data: DataOptions,
    opts: EvalOptions,
    out: OutputOptions,
    api: TrtApi | str = "tensorrt",
    *,
    model_path: Path | None = None,
    verbosity: str = "warning",
    extra_run: Mapping[str, Any] | None = None,
    after: Callable[[Backend], None] | None = None,
) -> EvalRun:
    """Evaluate a serialized TensorRT (``api`` "tensorrt") or TensorRT-RTX ("tensorrt-rtx") engine with one plain
    runner. ``model_path``: the model recorded in metrics.json (default: the engine; e.g. the ONNX it was built
    from); ``after``: called with the backend once metrics.json is written (before the engine closes)."""
    from common.trt.api import load_api
    from common.trt.runner import TrtRunner

    model = model_path or engine
    dataset = open_data(data, out, {"--engine-path": engine}, opts)
    trt_api = load_api(api) if isinstance(api, str) else api
    backend = TrtRunner.open(engine, trt_api, verbosity=verbosity)
    try:
        return _evaluate_and_then(backend, model, dataset, data, opts, out, extra_run, after)
    finally:
        backend.close()


def _check_onnx(model: Path, opts: EvalOptions, allow_imgsz_mismatch: bool) -> None:
    from common.eval.checks import check_onnx_input

    check_onnx_input(
        "--onnx-path",
        model,
        opts.imgsz,
        output_format=opts.output_format,
        output_name=opts.output_name,
        allow_imgsz_mismatch=allow_imgsz_mismatch,
    )


def _evaluate_and_then(
    backend: Backend,
    model: Path,
    dataset: CocoDataset,
    data: DataOptions,
    opts: EvalOptions,
    out: OutputOptions,
    extra_run: Mapping[str, Any] | None,
    after: Callable[[Backend], None] | None,
) -> EvalRun:
    from common.eval.checks import check_model_input

    spec = backend.input
    check_model_input(str(model), spec.name, spec.shape, spec.dtype, opts.imgsz)
    run = evaluate_to_files(backend, model, dataset, data, opts, out, extra_run)
    if after is not None:
        after(backend)
    return run
