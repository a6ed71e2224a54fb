#!/usr/bin/env python3
"""Evaluation throughput, side by side in one process: ceiling vs our evaluator vs Ultralytics.

For each batch size, on the same model and images:
  (a) ceiling      inference only: input/output resident on the GPU (IO binding), no host copies, the best of
                   one session's runs one at a time (serial) and every lane's session at once (overlapped);
                   on a CPU-only machine, session.run on a prepared batch
  (b) ours         the end-to-end evaluator (decode + letterbox workers, inference, NMS, unletterbox)
      sequential   the same evaluator with no threads (--workers 0), for reference
  (c) ultralytics  YOLO(onnx).predict, end to end, when ultralytics is importable (not for dfl144)
With --trt-api, (b) also times the TensorRT evaluator's backend on an engine built from the same
ONNX (through the engine cache). The first variant is what eval-onnx runs with no flags; the table says how
it compares with the ceiling and the best variant. With --time-to-metrics N: that variant over N images
(the selected images repeated under fresh ids), with COCOeval against without, and COCOeval's share.

--coco-bench N needs no model and no GPU: it times the COCOeval implementations on N images (the
instances file's images repeated) with synthetic detections, fed batch by batch as the evaluator feeds
them, and checks their 12 stats against pycocotools' (common.data.coco_bench).

--replay measures pipeline capacity instead: the real evaluator (default workers) fed by a backend
that replays the outputs recorded in one real pass, at no cost (it ignores the model's batch axis).
That is the most any backend can get through the pipeline, per layout and batch size.

Each figure spans at least --min-seconds (the image list is repeated). Prints a table and
writes JSON (default tmp/bench-eval/<timestamp>/bench.json). The AP and the detections of (b) are checked
against the sequential path on one scored pass; the replay's AP against the real model's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)

# isort: split
import numpy as np

from common.core.cli import (
    add_force_flag,
    add_old_spelling,
    check_range,
    make_parser,
    output_file,
    run_main,
    setup_logging,
)
from common.core.errors import UserError
from common.core.results import atomic_write_json, check_output_paths, latency_stats, run_dir, sha256_file, stamp
from common.core.sysinfo import cpu_seconds, run_metadata
from common.data.coco import CocoDataset, load_coco, open_dataset, results_to_rows
from common.data.coco_bench import CocoBenchOptions, format_coco_bench, run_coco_bench
from common.data.coco_partition import CPUS_PER_WORKER, MAX_WORKERS
from common.eval.cli import DEFAULT_DATA_ROOT, loader_factory
from common.eval.pipeline import EvalOptions, default_workers, evaluate, warmup_for_run
from common.eval.protocols import Backend
from common.ort.options import CUDA_EP, parse_provider_options
from common.ort.session import OrtBackend
from common.report.parity import load_detections
from common.throughput.monitor import GpuMonitor

STAGES = ("preprocess", "inference", "postprocess")
# what ran, from the evaluator's timings (the modes ``auto`` resolved to, why it fell back, the pipeline's shape)
RUN_FACTS = (
    "preprocess_mode",
    "preprocess_fallback",
    "postprocess_mode",
    "postprocess_fallback",
    "decode",
    "loaders",
    "workers",
    "load_chunk",
    "in_flight",
    "warmup_runs",
)
COCO_BENCH_ENGINES = ("stream", "stream-process", "pycocotools", "faster-coco-eval")


def _add_ttm_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--time-to-metrics",
        type=int,
        default=0,
        metavar="N",
        help="also time N images (repeated) with the first variant at the last --batch-sizes, without COCOeval "
        "and with the default --coco-eval, and their ratio (default 0: off)",
    )
    parser.add_argument(
        "--time-to-metrics-repeats",
        type=int,
        default=3,
        metavar="K",
        help="K pairs of --time-to-metrics runs, the order within a pair alternating; the pair of median ratio "
        "is reported, with every pair's ratio (default 3)",
    )


def _add_coco_bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--coco-bench",
        type=int,
        default=0,
        metavar="N",
        help="CPU only, no model: time the COCOeval engines on N images (the instances file's images repeated) "
        "with 300 synthetic detections each, fed in batches of the last --batch-sizes; prints a table and "
        "writes the JSON (default 0: off)",
    )
    parser.add_argument(
        "--coco-bench-engines",
        nargs="+",
        choices=COCO_BENCH_ENGINES,
        default=list(COCO_BENCH_ENGINES),
        help="--coco-bench: engines to time (default: all; stream-process: the streamed matching in a worker "
        "process, as large pipelined evaluations run it; faster-coco-eval where installed; the stats are "
        "compared with pycocotools' when it runs)",
    )

    parser.add_argument(
        "--coco-bench-workers",
        type=int,
        default=0,
        metavar="W",
        help="--coco-bench: worker processes of stream-process, each with a share of the categories (default 0: "
        f"as many as the evaluator starts on this machine, one per {CPUS_PER_WORKER} cores up to {MAX_WORKERS})",
    )

    parser.add_argument(
        "--coco-bench-detections",
        type=Path,
        default=None,
        metavar="JSON",
        help="--coco-bench: a model's detections on the instances file's images (an eval run's detections.json), "
        "each of the N images given those of the image it repeats, instead of synthetic ones (default: synthetic)",
    )

    parser.add_argument(
        "--coco-bench-pace",
        type=float,
        default=0.0,
        metavar="IMG_PER_S",
        help="--coco-bench: hand stream and stream-process their batches at this many images per second, as an "
        "inference pipeline would, so 'after last batch' is what remains once the last batch is in (default 0: "
        "all at once, so it includes all the matching a worker has not done yet)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        __doc__ or "",
        [
            "python scripts/cv-models/bench_eval_throughput.py "
            "--onnx-path models/cv-models/yolov10m/yolov10m.onnx --batch-sizes 1",
            "python scripts/cv-models/bench_eval_throughput.py "
            "--onnx-path models/cv-models/yolov10m/yolov10m-dynbatch.onnx --batch-sizes 1 4 8 16 32",
            "python scripts/cv-models/bench_eval_throughput.py "
            "--onnx-path models/cv-models/yolov10m/yolov10m-dynbatch.onnx --batch-sizes 32 --time-to-metrics 5000",
            "python scripts/cv-models/bench_eval_throughput.py "
            "--onnx-path models/cv-models/yolov10m/yolov10m.onnx --replay --batch-sizes 1 32",
            "python scripts/cv-models/bench_eval_throughput.py --smoke   # CI: bundled model, 8 images, CPU",
            "python scripts/cv-models/bench_eval_throughput.py --coco-bench 5100 --batch-sizes 32 "
            "--instances datasets/synthcoco-mini/annotations/instances_val2017.json",
        ],
    )
    _add_data_args(parser)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1], help="batch sizes to measure (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=default_workers(), help="image loaders for (b) (default: %(default)s)"
    )
    parser.add_argument("--lanes", type=int, default=3, help="ORT sessions of the IO-binding variants (default 3)")
    parser.add_argument(
        "--switch-interval-ms",
        type=float,
        default=None,
        help="Python's GIL switch interval during (b) (default: the evaluator's default)",
    )
    parser.add_argument(
        "--min-seconds", type=float, default=10.0, help="each figure spans at least this long (default 10)"
    )
    parser.add_argument("--cpu", action="store_true", help="ONNX Runtime CPU EP even where CUDA is available")
    parser.add_argument("--no-ultralytics", action="store_true", help="skip (c) even if ultralytics is installed")
    _add_variant_args(parser)
    parser.add_argument(
        "--replay",
        action="store_true",
        help="pipeline capacity: replay recorded outputs at no cost instead of running the model",
    )
    parser.add_argument(
        "--replay-modes",
        nargs="+",
        metavar="MODE",
        help="--replay: modes to time, each PREPROCESS or PREPROCESS+gpu-post (GPU post-processing on the "
        "device-resident replayed outputs); default: cpu, and on a GPU also gpu-letterbox and gpu-letterbox+gpu-post",
    )
    parser.add_argument(
        "--decode-bench",
        action="store_true",
        help="decoding alone: OpenCV in --workers threads vs nvImageCodec (--decode gpu) at --batch-sizes, "
        "and nvImageCodec's pixels against OpenCV's (on a CPU machine: nvImageCodec's CPU backend)",
    )
    _add_ttm_args(parser)
    _add_coco_bench_args(parser)
    _add_trt_args(parser)
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI: bundled model/set, 8 images, CPU")
    _add_output_args(parser)
    return parser


def _add_variant_args(parser: argparse.ArgumentParser) -> None:
    """Which (b) variants run, how often, and with which CUDA EP options."""
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME",
        help="(b) variants to time besides the first (default all: "
        + ", ".join(GPU_VARIANTS)
        + f" on a GPU; ort-cpu on a CPU); {DEFAULTS_VARIANT}-lanes-N[-main-thread]: the no-flag run on N lanes "
        "[with --lane-threads main]",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="R",
        help="time every (b) variant R times, round by round, the order reversed every other round, and report "
        "each variant's round of median img/s (every round's figure in the JSON): variants run in one order "
        "favour none (default 1: one round, in the listed order)",
    )
    parser.add_argument(
        "--skip-sequential", action="store_true", help="no sequential-path timing (AP is still compared)"
    )
    parser.add_argument(
        "--provider-option",
        action="append",
        default=[],
        metavar="EP:KEY=VALUE",
        help="CUDAExecutionProvider option for every session of the GPU variants and of the sequential reference, "
        "e.g. CUDAExecutionProvider:cudnn_conv_algo_search=HEURISTIC (repeatable; default: none). To compare "
        "detections against ONNX Runtime's defaults, run eval-onnx with and without it and compare the runs",
    )


def _add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=output_file("bench.json"),
        help="JSON path; DIR/ means DIR/bench.json (default: tmp/bench-eval/<timestamp>/bench.json)",
    )
    add_force_flag(parser)


# A variant's mode: its --preprocess, plus "+gpu-post" when the backend post-processes on the GPU,
# "+gpu-decode" when its lanes decode the JPEGs (--decode gpu, nvImageCodec) and "+procs" when the loaders
# are processes (--loaders processes).
HAS_GPU_POST = "postprocess" in {f.name for f in dataclasses.fields(EvalOptions)}
HAS_GPU_DECODE = importlib.util.find_spec("nvidia") is not None and bool(importlib.util.find_spec("nvidia.nvimgcodec"))
MODE_FLAGS = ("gpu-post", "gpu-decode", "procs")


DEFAULTS_MODE = "auto"  # the evaluator's defaults: --preprocess auto, --postprocess auto, --loaders auto, cpu decode


def _add_trt_args(parser: argparse.ArgumentParser) -> None:
    trt_api = parser.add_argument(
        "--trt-api",
        dest="trt_backend",
        choices=("tensorrt", "tensorrt-rtx"),
        help="also time the TensorRT backend of this API on an engine built from --onnx-path (engine cache; "
        "default: none)",
    )
    add_old_spelling(parser, "--trt-backend", trt_api)


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx-path", type=Path, help="model to benchmark (default with --smoke: the bundled one)")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT, help="COCO root (default: %(default)s)")
    parser.add_argument("--instances", type=Path, help="instances JSON (default: <data-root>/annotations/...)")
    parser.add_argument("--images-dir", type=Path, help="image folder (default: <data-root>/val2017)")
    parser.add_argument(
        "--max-images", type=int, default=100, help="distinct images used, the first N by id (default 100; <= 0: all)"
    )


def mode_parts(mode: str) -> tuple[str, bool, str, str]:
    """``PREPROCESS[+gpu-post][+gpu-decode][+procs]`` -> (--preprocess, GPU post-processing?, --decode,
    --loaders); ``auto``: the evaluator's defaults (post-processing ``auto``)."""
    prep, *flags = mode.split("+")
    if any(f not in MODE_FLAGS for f in flags) or len(set(flags)) != len(flags):
        raise UserError(f"variant mode {mode!r}: expected PREPROCESS[+gpu-post][+gpu-decode][+procs]")
    loaders = "processes" if "procs" in flags else "auto" if mode == DEFAULTS_MODE else "threads"
    return prep, "gpu-post" in flags, "gpu" if "gpu-decode" in flags else "cpu", loaders


def eval_options(mode: str, **kw: Any) -> EvalOptions:
    """EvalOptions for a variant mode (``mode_parts``; post-processing on the CPU unless +gpu-post)."""
    prep, post, decode, loaders = mode_parts(mode)
    if HAS_GPU_POST:
        kw["postprocess"] = "auto" if mode == DEFAULTS_MODE else "gpu" if post else "cpu"
    elif post:
        raise UserError(f"variant mode {mode!r}: this evaluator has no GPU post-processing")
    return EvalOptions(preprocess=prep, decode=decode, loaders=loaders, **kw)


def enable_mode(backend: Backend, mode: str) -> None:
    """Set ``backend`` up for a variant mode's pre-processing and decoding (UserError if it can't)."""
    from common.eval.pipeline import check_preprocess

    prep, _, decode, _ = mode_parts(mode)
    if mode != DEFAULTS_MODE:  # auto resolves in the evaluation, as eval-onnx's does
        check_preprocess(backend, prep, decode)


def _gpu_available(force_cpu: bool) -> bool:
    import onnxruntime as ort

    return not force_cpu and CUDA_EP in ort.get_available_providers()


def _repeat(ids: list[int], n: int, batch: int = 1) -> list[int]:
    """``ids`` repeated to at least ``n`` images, rounded up to whole batches: a partial last batch
    is a new input shape, and each session's first run at a shape pays cuDNN's algorithm search."""
    n = math.ceil(max(n, len(ids)) / batch) * batch
    return (ids * math.ceil(n / len(ids)))[:n]


def _span(per_item_s: float, min_seconds: float, floor: int) -> int:
    return max(floor, math.ceil(min_seconds / max(per_item_s, 1e-6)))


def _serial_ceiling(backend: Backend, batch: int, size: int, min_seconds: float) -> dict[str, Any]:
    """One session's synchronous runs, one after the other: resident IO binding on the GPU, a prepared host
    batch on the CPU. Runs in chunks until the timed runs add up to at least ``min_seconds``."""
    resident = getattr(backend, "resident_run_ms", None)
    if callable(resident):
        resident(10, batch=batch, warmup=10)  # warm-up (clocks, allocator, kernels)

        def chunk() -> list[float]:
            return resident(50, batch=batch, warmup=0)

        how = "one session, ORT IO binding, input/output resident on the GPU, synchronous runs one at a time"
    else:
        x = np.zeros((batch, 3, size, size), np.float32)
        backend.infer(x)

        def chunk() -> list[float]:
            out = []
            for _ in range(5):
                t0 = time.perf_counter()
                backend.infer(x)
                out.append((time.perf_counter() - t0) * 1000)
            return out

        how = "session.run on a prepared host batch"
    ms: list[float] = []
    while sum(ms) < min_seconds * 1000:
        ms.extend(chunk())
    stats = latency_stats([m / 1000 for m in ms], items_per_sample=batch)
    return {"images_per_s": stats["throughput_fps"], "latency": stats, "method": how, "seconds": sum(ms) / 1000}


def _lane_count(backend: Any) -> int:
    """The lanes of a backend whose lanes can run resident at once (0: one without, e.g. TensorRT's)."""
    if not callable(getattr(backend, "resident_overlap_images_per_s", None)):
        return 0
    meta = backend.metadata()
    if meta.get("lane_threads") == "main":  # one thread runs its lanes one after the other
        return 0
    return int(meta.get("lanes") or 1)


def _overlap_ceiling(backend: Any, lanes: int, batch: int, min_seconds: float) -> dict[str, Any]:
    """Every one of the ``lanes`` sessions of ``backend`` running resident synchronous runs at once, each on
    its own stream."""
    overlapped = backend.resident_overlap_images_per_s
    first = overlapped(20, batch=batch, warmup=10)
    runs = max(20, math.ceil(min_seconds * first / (lanes * batch)))
    t0 = time.perf_counter()
    ips = overlapped(runs, batch=batch, warmup=0)
    how = f"{lanes} sessions (the lanes), ORT IO binding, resident, synchronous runs on their streams at once"
    return {"images_per_s": ips, "method": how, "seconds": time.perf_counter() - t0, "lanes": lanes}


def ceiling(backend: Backend, batch: int, size: int, min_seconds: float, others: Sequence[Any] = ()) -> dict[str, Any]:
    """The honest inference-only ceiling: the best of the configurations we can run, serial (one session,
    one batch at a time) and overlapped (every lane at once, once per lane count among ``backend`` and
    ``others``, the other backends the run times); ``best`` says which, ``images_per_s`` is its.
    ``overlap`` is the best overlapped figure, ``overlap_by_lanes`` each lane count's."""
    serial = _serial_ceiling(backend, batch, size, min_seconds)
    first_of: dict[int, Any] = {}
    for b in (backend, *others):
        first_of.setdefault(_lane_count(b), b)
    by_lanes = {n: _overlap_ceiling(b, n, batch, min_seconds) for n, b in first_of.items() if n}
    overlap = max(by_lanes.values(), key=lambda c: c["images_per_s"], default=None)
    best = "overlap" if overlap is not None and overlap["images_per_s"] > serial["images_per_s"] else "serial"
    chosen = overlap if best == "overlap" and overlap is not None else serial
    return {
        "images_per_s": chosen["images_per_s"],
        "best": best,
        "method": chosen["method"],
        "serial": serial,
        "overlap": overlap,
        "overlap_by_lanes": {str(k): v for k, v in sorted(by_lanes.items())},
    }


def at_least(run: Any, n_images: int, min_seconds: float) -> dict[str, Any]:
    """``run(n)`` with n images; once more with proportionally more when it took under ``min_seconds``."""
    res = run(n_images)
    if "seconds" in res and res["seconds"] < min_seconds:
        res = run(math.ceil(n_images * min_seconds / max(res["seconds"], 1e-3) * 1.15))
    return res


def run_ours(
    backend: Backend,
    ds: CocoDataset,
    batch: int,
    workers: int,
    n_images: int,
    prep: str = "cpu",
    switch_ms: float | None = None,
) -> dict[str, Any]:
    rep = dataclasses.replace(ds, image_ids=_repeat(ds.image_ids, n_images, batch))
    opts = eval_options(
        prep,
        batch_size=batch,
        workers=workers,
        warmup_runs=3,
        progress=False,
        coco_eval=False,
        switch_interval_ms=switch_ms,
    )
    with GpuMonitor() as mon:
        cpu0 = time.process_time()
        res = evaluate(backend, rep, opts, loader_factory(opts))
        cpu_s = time.process_time() - cpu0
    t = res.timings
    return {
        "images_per_s": t["end_to_end_images_per_s"],
        "images": res.num_images,
        "seconds": t["wall_seconds"],
        "mode": t["mode"],
        "stage_ms": {k: {"median": t[k]["median_ms"], "p90": t[k]["p90_ms"]} for k in STAGES},
        # the process's CPU time (every thread, warm-up included) per image: host cost apart from waiting
        "cpu_ms_per_image": 1000.0 * cpu_s / max(1, res.num_images),
        **{k: t.get(k) for k in RUN_FACTS},
        "gpu": mon.summary(),
    }


def scored(backend: Backend, ds: CocoDataset, batch: int, workers: int, prep: str = "cpu") -> dict[str, float]:
    return scored_run(backend, ds, batch, workers, prep).stats


def scored_run(backend: Backend, ds: CocoDataset, batch: int, workers: int, prep: str = "cpu") -> Any:
    """One scored pass (COCOeval) of a variant: its ``EvalResult`` (stats and detection rows)."""
    opts = eval_options(prep, batch_size=batch, workers=workers, progress=False)
    return evaluate(backend, ds, opts, loader_factory(opts))


def run_ultralytics(onnx: Path, ds: CocoDataset, batch: int, gpu: bool, n_images: int) -> dict[str, Any]:
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        return {"skipped": f"ultralytics not importable: {exc}"}
    model = YOLO(str(onnx), task="detect")
    paths = [str(ds.image_path(i)) for i in _repeat(ds.image_ids, n_images)]
    kw = {
        "imgsz": 640,
        "conf": 0.001,
        "iou": 0.7,
        "max_det": 300,
        "verbose": False,
        "batch": batch,
        "device": 0 if gpu else "cpu",
    }
    for _ in model.predict(source=paths[: 2 * batch], stream=True, **kw):
        pass  # warm-up
    speeds: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    with GpuMonitor() as mon:
        t0 = time.perf_counter()
        for r in model.predict(source=paths, stream=True, **kw):
            for k in speeds:
                speeds[k].append(float(r.speed.get(k) or 0.0))
        wall = time.perf_counter() - t0
    import ultralytics

    return {
        "images_per_s": len(paths) / wall,
        "images": len(paths),
        "seconds": wall,
        "version": ultralytics.__version__,
        "stage_ms": {k: {"median": float(np.median(v)), "p90": float(np.percentile(v, 90))} for k, v in speeds.items()},
        "gpu": mon.summary(),
    }


# (b) variants on a GPU, in order (the first is the one we recommend): name -> (lanes, --preprocess,
# --gpu-order[+nograph][+sleep]); lanes 0 = a plain ORT CUDA session (session.run on host arrays), -1 = --lanes.
# IO-binding lanes replay a CUDA graph where ORT can capture one (eval-onnx --io-binding's default);
# "+nograph": per-kernel ORT runs (--provider-option CUDAExecutionProvider:enable_cuda_graph=0); "+sleep":
# --lane-wait sleep; "+depth1": each lane's thread waits for its batch before it enqueues the next (no twins);
# "+main": --lane-threads main.
GPU_POST_VARIANTS: dict[str, tuple[int, str, str]] = {
    "ort-cuda-iobinding-gpu-letterbox-gpu-post": (-1, "gpu-letterbox+gpu-post", "auto"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-serial": (-1, "gpu-letterbox+gpu-post", "serial"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap": (-1, "gpu-letterbox+gpu-post", "overlap"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-procs": (-1, "gpu-letterbox+gpu-post+procs", "auto"),
    "ort-cuda-iobinding-gpu-letterbox-gpu-post-overlap-procs": (-1, "gpu-letterbox+gpu-post+procs", "overlap"),
}
GPU_NOGRAPH_VARIANTS: dict[str, tuple[int, str, str]] = {
    "ort-cuda-iobinding-nograph-gpu-letterbox-gpu-post": (-1, "gpu-letterbox+gpu-post", "auto+nograph"),
}
GPU_DECODE_VARIANTS: dict[str, tuple[int, str, str]] = {
    "ort-cuda-iobinding-gpu-decode-gpu-letterbox-gpu-post": (-1, "gpu-letterbox+gpu-post+gpu-decode", "auto"),
}
# what eval-onnx with no flags runs on a GPU machine (--io-binding auto -> lanes, --preprocess/--postprocess auto)
DEFAULTS_VARIANT = "eval-onnx-defaults"
GPU_VARIANTS: dict[str, tuple[int, str, str]] = {
    DEFAULTS_VARIANT: (-1, DEFAULTS_MODE, "auto"),
    f"{DEFAULTS_VARIANT}-sleep-wait": (-1, DEFAULTS_MODE, "auto+sleep"),
    f"{DEFAULTS_VARIANT}-depth1": (-1, DEFAULTS_MODE, "auto+depth1"),
    f"{DEFAULTS_VARIANT}-main-thread": (-1, DEFAULTS_MODE, "auto+main"),
    **(GPU_POST_VARIANTS if HAS_GPU_POST else {}),
    **(GPU_NOGRAPH_VARIANTS if HAS_GPU_POST else {}),
    **(GPU_DECODE_VARIANTS if HAS_GPU_POST and HAS_GPU_DECODE else {}),
    "ort-cuda-iobinding-gpu-normalize": (-1, "gpu-normalize", "auto"),
    "ort-cuda-iobinding-gpu-letterbox": (-1, "gpu-letterbox", "auto"),
    "ort-cuda-iobinding": (-1, "cpu", "auto"),
    "ort-cuda-iobinding-1lane": (1, "cpu", "auto"),
    "ort-cuda-plain": (0, "cpu", "auto"),
}
# every name --variants may give; those this machine can't run (on a CPU: all but ort-cpu) are left out of the run
KNOWN_VARIANTS = [*GPU_VARIANTS, *GPU_POST_VARIANTS, *GPU_NOGRAPH_VARIANTS, *GPU_DECODE_VARIANTS, "ort-cpu"]
# besides: eval-onnx-defaults-lanes-N[-main-thread] for any N >= 1 (the no-flag run with --lanes N [--lane-threads
# main])
LANES_VARIANT = re.compile(rf"{re.escape(DEFAULTS_VARIANT)}-lanes-([1-9][0-9]*)(-main-thread)?")


def variant_spec(name: str) -> tuple[int, str, str] | None:
    """(lanes, --preprocess, --gpu-order...) of a GPU variant ``name``, or None for a name no GPU runs."""
    if name in GPU_VARIANTS:
        return GPU_VARIANTS[name]
    m = LANES_VARIANT.fullmatch(name)
    return (int(m.group(1)), DEFAULTS_MODE, "auto+main" if m.group(2) else "auto") if m else None


# of the GPU memory free before the first variant starts, what the variants may take together (ORT's arenas
# and cuDNN's workspaces live on after each run; past the card's memory, cuDNN and ORT fail or crash)
GPU_MEMORY_SHARE = 0.8


class GpuMemoryPlan:
    """Which variants start, by GPU memory: each is counted at its lanes times the first variant's measured
    footprint per lane, since the arenas of per-kernel sessions grow during the runs, after start-up, so
    what is free when a variant starts says too little. ``refuse`` says why a variant does not fit; ``take``
    counts one that started."""

    def __init__(self, free_before: int, lanes: int, free_after: int, share: float = GPU_MEMORY_SHARE) -> None:
        self.used = max(0, free_before - free_after)
        self.per_lane = self.used / max(1, lanes)
        self.budget = free_before * share

    def refuse(self, name: str, lanes: int) -> str | None:
        need = max(1, lanes) * self.per_lane
        if self.used + need <= self.budget:
            return None
        gib = 1 << 30
        return (
            f"not started: about {need / gib:.1f} GiB of GPU memory more than the {self.budget / gib:.1f} GiB "
            f"the variants may share ({self.used / gib:.1f} GiB taken); time it with fewer: --variants {name}"
        )

    def take(self, lanes: int) -> None:
        self.used += max(1, lanes) * self.per_lane


def _variant_lanes(name: str, lanes: int) -> int:
    """The sessions variant ``name`` runs (``--lanes`` for the -1 entries, one for a plain session)."""
    n_lanes = variant_spec(name)[0]  # type: ignore[index]  # a GPU variant
    return 1 if n_lanes == 0 else (lanes if n_lanes < 0 else n_lanes)


def _make_variant(
    onnx: Path, name: str, batch: int, lanes: int, cuda_opts: Mapping[str, str] | None = None
) -> tuple[Backend, str]:
    """The backend of GPU variant ``name`` (``GPU_VARIANTS`` or eval-onnx-defaults-lanes-N) on ``lanes`` sessions
    (``_variant_lanes``), set up for its mode; and the mode. ``cuda_opts``: CUDA EP options for every session
    (``--provider-option``)."""
    from common.throughput.ort_lanes import OrtCudaBackend

    n_lanes, prep, order = variant_spec(name)  # type: ignore[misc]  # a GPU variant
    order, *extras = order.split("+")
    options = {CUDA_EP: dict(cuda_opts)} if cuda_opts else None
    if n_lanes == 0:
        plain = OrtBackend(str(onnx), [CUDA_EP], options, require_accelerator=True, intra_op_threads=1)
        return plain, prep
    backend = OrtCudaBackend(
        str(onnx),
        options,
        max_batch=batch,
        lanes=lanes,
        gpu_order=order,
        graph="off" if "nograph" in extras else "auto",
        spin_wait="sleep" not in extras,
        lane_depth=1 if "depth1" in extras else None,
        lane_threads="main" if "main" in extras else "per-lane",
    )
    try:
        enable_mode(backend, prep)
    except BaseException:
        backend.close()
        raise
    return backend, prep


def compile_post_kernels() -> float | None:
    """Compile the GPU post-processing kernels (once per process): their seconds, or None where they can't be
    (the variants that need them then say why). Done before the variants start, so that no variant's start-up
    holds it."""
    if not HAS_GPU_POST:
        return None
    t0 = time.perf_counter()
    try:
        from common.throughput.gpu_postprocess import postprocess_kernels

        postprocess_kernels(0)
    except Exception:
        return None
    return time.perf_counter() - t0


def _gpu_free() -> int | None:
    """Free bytes on the GPU now, or None where that can't be asked."""
    try:
        from common.gpu.cuda_mem import memory_left

        return memory_left()[0]
    except Exception:
        return None


def make_backends(
    onnx: Path,
    batch: int,
    gpu: bool,
    lanes: int,
    wanted: Sequence[str] | None,
    starts: dict[str, float] | None = None,
    cuda_opts: Mapping[str, str] | None = None,
) -> tuple[dict[str, tuple[Backend, str]], dict[str, str]]:
    """name -> (backend, preprocess mode) to compare (first = the one we recommend), and the ones
    that failed to start or did not fit the GPU's memory (``GpuMemoryPlan``). ``starts`` gets each backend's
    start-up seconds (sessions, CUDA graph capture, GPU pre/post set-up); ``cuda_opts``: ``_make_variant``'s."""
    starts = {} if starts is None else starts
    if not gpu:
        t0 = time.perf_counter()
        cpu = OrtBackend(str(onnx), ["CPUExecutionProvider"])
        starts["ort-cpu"] = time.perf_counter() - t0
        return {"ort-cpu": (cpu, "cpu")}, {}
    names = list(GPU_VARIANTS)
    if wanted:
        names = [n for n in names if n == names[0] or n in wanted or n == "ort-cuda-plain"]
        names += [n for n in dict.fromkeys(wanted) if n not in GPU_VARIANTS and variant_spec(n) is not None]
    out: dict[str, tuple[Backend, str]] = {}
    failed: dict[str, str] = {}
    plan: GpuMemoryPlan | None = None
    for name in names:
        n_lanes = _variant_lanes(name, lanes)
        if plan is not None and (why := plan.refuse(name, n_lanes)) is not None:
            failed[name] = why
            continue
        free_before, t0 = (_gpu_free() if not out else None), time.perf_counter()
        try:
            out[name] = _make_variant(onnx, name, batch, n_lanes, cuda_opts)
            starts[name] = time.perf_counter() - t0
        except Exception as exc:  # one broken variant must not hide the others
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        if plan is not None:
            plan.take(n_lanes)
        elif free_before is not None and (free_after := _gpu_free()) is not None:
            plan = GpuMemoryPlan(free_before, n_lanes, free_after)
    if not out:
        raise UserError(f"no GPU backend could start: {failed}")
    return out, failed


def make_trt_backends(onnx: Path, batch: int, api_name: str, gpu: bool, dynamic: bool) -> dict[str, tuple[Any, str]]:
    """The TensorRT backend on an engine built from ``onnx`` (or reused from the engine cache under tmp/):
    CPU pre-processing, and GPU letterboxing on a GPU."""
    from common.throughput.trt_lanes import TrtBackend
    from common.trt.api import load_backend
    from common.trt.build import BuildOptions, build_or_reuse

    api = load_backend(api_name)
    built = build_or_reuse(
        onnx, None, BuildOptions(max_batch=batch) if dynamic else BuildOptions(), api, verbosity="error"
    )
    out: dict[str, tuple[Any, str]] = {api.name: (TrtBackend.open(built.engine_path, api), "cpu")}
    if gpu:
        out[f"{api.name}-gpu-letterbox"] = (TrtBackend.open(built.engine_path, api), "gpu-letterbox")
        if HAS_GPU_POST:
            out[f"{api.name}-gpu-letterbox-gpu-post"] = (
                TrtBackend.open(built.engine_path, api),
                "gpu-letterbox+gpu-post",
            )
    return out


def bench_batch(
    args: argparse.Namespace, ds: CocoDataset, batch: int, gpu: bool, cuda_opts: Mapping[str, str]
) -> dict[str, Any]:
    starts: dict[str, float] = {}
    compile_s = compile_post_kernels() if gpu else None
    backends, failed = make_backends(args.onnx_path, batch, gpu, args.lanes, args.variants, starts, cuda_opts)
    main_name = next(iter(backends))
    main = backends[main_name][0]
    trt_names: set[str] = set()
    if args.trt_backend:
        try:
            trt = make_trt_backends(args.onnx_path, batch, args.trt_backend, gpu, main.input.batch_dynamic)
            for name, (backend, prep) in trt.items():
                if prep != "cpu":
                    enable_mode(backend, prep)
                backends[name] = (backend, prep)
                trt_names.add(name)
        except Exception as exc:
            failed[args.trt_backend] = f"{type(exc).__name__}: {exc}"
    size = main.input.shape[2] or 640
    row: dict[str, Any] = {"batch_size": batch, "backend": main_name, "failed": dict(failed)}
    timed = [
        name
        for name in backends
        if not args.variants or name in args.variants or name == main_name or name in trt_names
    ]
    # the overlapped ceiling at every lane count a timed variant runs (the honest ceiling is the best of them)
    row["ceiling"] = ceiling(main, batch, int(size), args.min_seconds, [backends[name][0] for name in timed])
    n_images = math.ceil(row["ceiling"]["images_per_s"] * args.min_seconds * 1.2)

    def run_variant(name: str, n: int) -> dict[str, Any]:
        backend, prep = backends[name]
        return run_ours(backend, ds, batch, args.workers, n, prep, args.switch_interval_ms)

    row["ours"], row["round_order"] = time_in_rounds(
        timed, run_variant, args.rounds, n_images, args.min_seconds, row["failed"]
    )
    row["kernel_compile_seconds"] = compile_s
    for name, figure in row["ours"].items():
        figure["start_seconds"] = starts.get(name)
    seq_backend = backends.get("ort-cuda-plain", backends[main_name])[0]
    row["sequential"] = (
        None
        if args.skip_sequential
        else at_least(
            lambda n: run_ours(seq_backend, ds, batch, 0, n), max(len(ds.image_ids), n_images // 3), args.min_seconds
        )
    )
    # AP: the sequential CPU-letterbox path against every timed variant, one scored pass each
    compare_to_sequential(row, backends, seq_backend, ds, batch, args.workers)
    if not row["ours"]:
        raise UserError(f"every variant failed: {row['failed']}")
    summarise(row, main_name)
    for backend, _ in backends.values():
        backend.close()
    return row


def time_in_rounds(
    names: Sequence[str],
    run: Any,
    rounds: int,
    n_images: int,
    min_seconds: float,
    failed: dict[str, str],
) -> tuple[dict[str, dict[str, Any]], list[list[str]]]:
    """Each variant timed ``rounds`` times (``run(name, n)``, at least ``min_seconds`` each), round by round,
    the order reversed every other round so that no variant always runs first; each variant's figure is its
    round of median images/s, with every round's images/s beside it (``rounds_images_per_s``). A variant that
    fails goes to ``failed`` and is not run again. Returns (name -> figure, the order of each round)."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    order = []
    for r in range(rounds):
        this = [name for name in (names if r % 2 == 0 else names[::-1]) if name not in failed]
        order.append(this)
        for name in this:
            try:
                runs[name].append(at_least(lambda n, v=name: run(v, n), n_images, min_seconds))
            except Exception as exc:
                failed[name] = f"{type(exc).__name__}: {exc}"
    out = {}
    for name, got in runs.items():
        if got and name not in failed:
            ranked = sorted(got, key=lambda res: res["images_per_s"])
            out[name] = {**ranked[(len(ranked) - 1) // 2], "rounds_images_per_s": [res["images_per_s"] for res in got]}
    return out, order


def compare_to_sequential(
    row: dict[str, Any],
    backends: dict[str, tuple[Backend, str]],
    seq_backend: Backend,
    ds: CocoDataset,
    batch: int,
    workers: int,
) -> None:
    """AP and detections of every timed variant against the sequential reference path (CPU letterbox, NumPy
    post-processing, no threads), one scored pass each: ``ap``, ``identical`` (the 12 stats ``==``),
    ``detections_identical`` (every row ``==``)."""
    ref = scored_run(seq_backend, ds, batch, 0)
    row["ap_sequential"] = ref.stats.get("AP")
    row["ap"], row["identical"], row["detections_identical"] = {}, {}, {}
    for name in row["ours"]:
        backend, prep = backends[name]
        got = scored_run(backend, ds, batch, workers, prep)
        row["ap"][name], row["identical"][name] = got.stats.get("AP"), got.stats == ref.stats
        row["detections_identical"][name] = got.rows.shape == ref.rows.shape and bool(np.all(got.rows == ref.rows))


# COCO val2017's images: what a user's evaluation runs through, start-up included (``seconds_for_val2017``)
VAL2017_IMAGES = 5000


def summarise(row: dict[str, Any], main_name: str) -> None:
    """The row's verdicts: the best variant and its ratio to the honest ceiling; the first (recommended)
    variant's AP, its ratio to the ceiling and to the best variant; each variant's start-up plus
    ``VAL2017_IMAGES`` at its images/s (``seconds_for_val2017``: more lanes may run faster yet start slower)."""
    ceil = row["ceiling"]["images_per_s"]
    row["seconds_for_val2017"] = {
        name: fig["start_seconds"] + VAL2017_IMAGES / fig["images_per_s"]
        for name, fig in row["ours"].items()
        if fig.get("start_seconds") is not None and fig["images_per_s"] > 0
    }
    row["ap_ours"] = row["ap"].get(main_name)
    row["stats_identical"] = row["identical"].get(main_name, False)
    best_name = max(row["ours"], key=lambda k: row["ours"][k]["images_per_s"])
    row["best_variant"] = best_name
    row["best_ours_images_per_s"] = row["ours"][best_name]["images_per_s"]
    row["ratio_to_ceiling"] = row["best_ours_images_per_s"] / ceil
    if main_name in row["ours"]:
        main_ips = row["ours"][main_name]["images_per_s"]
        row["main_variant"] = main_name
        row["main_ratio_to_ceiling"] = main_ips / ceil
        row["main_ratio_to_best"] = main_ips / row["best_ours_images_per_s"]


def replay_rows(args: argparse.Namespace, ds: CocoDataset, gpu: bool) -> list[dict[str, Any]]:
    """Pipeline capacity per batch size and pre-processing mode: the real evaluator over a zero-cost
    backend replaying outputs recorded in one real pass (CPU letterbox, batch 1) of ``--onnx-path``."""
    from common.throughput.replay import ReplayBackend, record_outputs, replay_ids

    providers = ["CUDAExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    real = OrtBackend(str(args.onnx_path), providers, require_accelerator=gpu)
    size = int(real.input.shape[2] or 640)
    t0 = time.perf_counter()
    recorded = record_outputs(real, ds, ds.image_ids, size)
    record_s = time.perf_counter() - t0
    modes = args.replay_modes or (
        ["cpu", "gpu-letterbox", *(["gpu-letterbox+gpu-post"] if HAS_GPU_POST else [])] if gpu else ["cpu"]
    )
    rows = []
    for batch in args.batch_sizes:
        order = replay_ids(ds.image_ids, batch)
        rds = dataclasses.replace(ds, image_ids=order)
        replay = ReplayBackend(recorded, order, batch, real)
        ap_real = scored(real, dataclasses.replace(ds, image_ids=list(dict.fromkeys(order))), 1, 0).get("AP")
        row: dict[str, Any] = {
            "batch_size": batch,
            "images_distinct": len(set(order)),
            "record_seconds": record_s,
            "ap_real": ap_real,
            "modes": {},
            "failed": {},
        }
        for mode in modes:
            try:
                first = max(len(order), 1000 if gpu else 0)
                res = at_least(functools.partial(_replay_pass, replay, rds, args, mode), first, args.min_seconds)
                replay.rewind()
                res["ap"] = scored(replay, rds, batch, args.workers, mode).get("AP")
                row["modes"][mode] = res
            except Exception as exc:
                row["failed"][mode] = f"{type(exc).__name__}: {exc}"
        replay.close()
        rows.append(row)
        print(format_replay([row]), file=sys.stderr, flush=True)
    real.close()
    return rows


def _replay_pass(replay: Any, rds: CocoDataset, args: argparse.Namespace, mode: str, n: int) -> dict[str, Any]:
    replay.rewind()
    return run_ours(replay, rds, replay.batch, args.workers, n, mode, args.switch_interval_ms)


def format_replay(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'batch':>5}  {'replay, preprocess':<24}{'img/s':>9}  {'GPU %':>6}  "
        f"{'stage ms pre/inf/post':<24}  AP replay / real"
    ]
    for r in rows:
        b = r["batch_size"]
        for mode, d in r["modes"].items():
            st = d["stage_ms"]
            stages = "/".join(f"{st[k]['median']:.2f}" for k in STAGES)
            gpu = (d.get("gpu") or {}).get("gpu_util_mean")
            gpu_s = f"{gpu:.0f}" if gpu is not None else "-"
            ap, real = d.get("ap"), r.get("ap_real")
            ap_s = f"{ap:.4f} / {real:.4f}" if ap is not None and real is not None else "-"
            lines.append(f"{b:>5}  {mode:<24}{d['images_per_s']:>9.1f}  {gpu_s:>6}  {stages:<24}  {ap_s}")
        for mode, err in r.get("failed", {}).items():
            lines.append(f"{b:>5}  {mode:<24}FAILED {err}")
    return "\n".join(lines)


def time_to_metrics(
    args: argparse.Namespace, ds: CocoDataset, gpu: bool, n: int, out_dir: Path, cuda_opts: Mapping[str, str]
) -> dict[str, Any]:
    """The recommended variant (the evaluator's defaults, default ``--coco-eval``) at the last batch size over
    ``n`` images (the selected ones repeated under fresh ids): without COCOeval (pipeline only: the time to
    the last detection) and with it (the time to metrics), ``--time-to-metrics-repeats`` pairs, the order
    within a pair alternating. Each is one whole ``evaluate`` call, warm-up included, on the same warm
    backend, warmed first at both of the run's shapes (``prewarm_seconds``: a partial last batch's first run
    searches cuDNN's algorithms, which would land in the first pair alone); ``ratio`` = with / without. The
    pair of median ratio is reported (``_ttm_median``). ``cuda_opts``: ``make_backends``'s."""
    from common.throughput.repeat import repeated_dataset

    batch = args.batch_sizes[-1]
    big = repeated_dataset(ds, n, out_dir)
    backends, failed = make_backends(args.onnx_path, batch, gpu, args.lanes, args.variants, cuda_opts=cuda_opts)
    name = next(iter(backends))
    backend, prep = backends[name]
    kw = dict(batch_size=batch, workers=args.workers, warmup_runs=3, progress=False)
    pairs = []
    try:
        t0 = time.perf_counter()
        warmup_for_run(backend, n, batch, eval_options(prep, **kw).imgsz, 3)
        prewarm = time.perf_counter() - t0
        for r in range(args.time_to_metrics_repeats):
            runs = {}
            for key, coco in (("pipeline", False), ("metrics", True))[:: 1 if r % 2 == 0 else -1]:
                opts = eval_options(prep, coco_eval=coco, switch_interval_ms=args.switch_interval_ms, **kw)
                c0, t0 = cpu_seconds(), time.perf_counter()
                res = evaluate(backend, big, opts, loader_factory(opts))
                secs, c1 = time.perf_counter() - t0, cpu_seconds()
                runs[key] = (res, secs, (c1[0] - c0[0], c1[1] - c0[1]))
            pairs.append(_ttm_report(runs, n, len(ds.image_ids), batch, name, failed))
    finally:
        for b, _ in backends.values():
            b.close()
    return {**_ttm_median(pairs), "prewarm_seconds": prewarm}


def _ttm_median(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The pair of median ratio (the lower of the two middle ones for an even count), with every pair's
    seconds and ratio in the order they ran."""
    mid = sorted(pairs, key=lambda p: p["ratio"])[(len(pairs) - 1) // 2]
    keys = ("seconds", "pipeline_only_seconds", "ratio", "coco_eval_seconds")
    return {**mid, "repeats": len(pairs), "pairs": [{k: p[k] for k in keys} for p in pairs]}


def _ttm_report(
    runs: dict[str, tuple[Any, float, tuple[float, float]]],
    n: int,
    distinct: int,
    batch: int,
    name: str,
    failed: dict[str, str],
) -> dict[str, Any]:
    (pipe, pipe_s, pipe_cpu), (res, total, cpu) = runs["pipeline"], runs["metrics"]
    t = res.timings
    after = t.get("coco_eval_after_last_batch_s", t["eval_seconds"])
    return {
        "images": n,
        "distinct_images": distinct,
        "batch_size": batch,
        "variant": name,
        "seconds": total,  # evaluate() with COCOeval: warm-up, the run, COCOeval after the last batch
        "pipeline_only_seconds": pipe_s,  # evaluate() without COCOeval, the same way
        "ratio": total / pipe_s if pipe_s > 0 else 0.0,
        "pipeline_seconds": t["wall_seconds"],  # the run with COCOeval: first image to last detection
        "pipeline_only_wall_seconds": pipe.timings["wall_seconds"],
        "coco_eval_seconds": after,  # after the last batch
        "coco_eval_match_seconds": t.get("coco_eval_match_s"),  # a streamed engine's matching beside the batches
        "coco_eval_share": after / total if total > 0 else 0.0,
        "coco_engine": t["coco_engine"],
        "coco_eval_runs_in": t.get("coco_eval_runs_in"),  # process, thread, inline (None: not streamed)
        "coco_eval_workers": t.get("coco_eval_workers"),  # worker processes sharing the categories
        "coco_eval_worker_accumulate_seconds": t.get("coco_eval_worker_accumulate_s"),
        "preprocess_mode": t["preprocess_mode"],
        "postprocess_mode": t["postprocess_mode"],
        "phases": {"pipeline_only": _phases(pipe.timings, pipe_s, pipe_cpu), "with_coco": _phases(t, total, cpu)},
        "images_per_s": n / total if total > 0 else 0.0,
        "AP": res.stats.get("AP"),
        "failed": failed,
    }


def _phases(t: dict[str, Any], seconds: float, cpu: tuple[float, float]) -> dict[str, Any]:
    """Where one ``evaluate`` call's seconds went: before the first image (``start_seconds``), the run, COCOeval
    after the last batch, and the rest (gathering the rows, statistics); with the loaders' own start to ready
    (they boot during the warm-up), the COCO workers' (they start after it) and the loaders that ran; and the
    call's CPU seconds (``cpu``: this process's, its child processes'), of which the COCO workers' own."""
    start = t.get("start_seconds") or {}
    after = t.get("coco_eval_after_last_batch_s") or 0.0
    return {
        "start": start,
        "run": t["wall_seconds"],
        "coco_after_last_batch": after,
        "rest": seconds - start.get("total", 0.0) - t["wall_seconds"] - after,
        "loaders": t.get("loaders"),
        "loader_workers": t.get("workers"),
        "loaders_start_seconds": t.get("loaders_start_seconds"),
        "coco_eval_worker_start_s": t.get("coco_eval_worker_start_s"),
        "coco_eval_feed_s": t.get("coco_eval_feed_s"),
        "cpu_seconds": {
            "this_process": cpu[0],  # the run's threads: staging, launches, post-processing, the COCO hand-over
            "child_processes": cpu[1],  # the loader processes and the COCO workers
            "coco_workers": t.get("coco_eval_worker_cpu_s"),
        },
    }


def _engine_label(d: dict[str, Any]) -> str:
    """The engine, and for the streamed one where it ran: ``stream, 4 processes``."""
    where, workers = d.get("coco_eval_runs_in"), d.get("coco_eval_workers")
    if where == "process":
        return f"{d['coco_engine']}, {workers} process{'es' if workers != 1 else ''}"
    return f"{d['coco_engine']}, {where}" if where else str(d["coco_engine"])


def format_ttm(d: dict[str, Any]) -> str:
    ratios = ", ".join(f"{p['ratio']:.2f}x" for p in d.get("pairs", []))
    return (
        f"time to metrics (the pair of median ratio of {d.get('repeats', 1)}: {ratios}): {d['images']} images "
        f"({d['distinct_images']} distinct, repeated under fresh ids), "
        f"{d['variant']} batch {d['batch_size']}: {d['seconds']:.2f} s ({d['images_per_s']:.1f} img/s) vs "
        f"{d['pipeline_only_seconds']:.2f} s without COCOeval = {d['ratio']:.2f}x; "
        f"pipeline {d['pipeline_seconds']:.2f} s + COCOeval ({_engine_label(d)}) {d['coco_eval_seconds']:.2f} s "
        f"after the last batch ({100 * d['coco_eval_share']:.1f}% of the total), AP {d['AP']:.4f}; the backend "
        f"warmed at the run's shapes first in {d.get('prewarm_seconds', 0.0):.2f} s"
    ) + "".join(f"\n  {k}: {_phase_line(v)}" for k, v in d.get("phases", {}).items())


def _phase_line(p: dict[str, Any]) -> str:
    st = p["start"]
    return (
        f"start {st.get('total', 0.0):.2f} s (open {st.get('open', 0.0):.2f}, warm-up {st.get('warmup', 0.0):.2f}, "
        f"loaders wait {st.get('loaders_wait', 0.0):.2f}), run {p['run']:.2f}, COCOeval after "
        f"{p['coco_after_last_batch']:.2f}, rest {p['rest']:.2f}; {p['loader_workers']} {p['loaders']} loaders"
    ) + _cpu_line(p.get("cpu_seconds"))


def _cpu_line(c: dict[str, Any] | None) -> str:
    """``; CPU s: this process 4.10, child processes 21.30 (COCO workers 2.10)``, or nothing (no record)."""
    if not c:
        return ""
    coco = c.get("coco_workers")
    return f"; CPU s: this process {c['this_process']:.2f}, child processes {c['child_processes']:.2f}" + (
        f" (COCO workers {coco:.2f})" if coco is not None else ""
    )


def _fmt_line(batch: int, name: str, d: dict[str, Any], ceil: float, ultra: float | None) -> str:
    ips = d["images_per_s"]
    gpu = (d.get("gpu") or {}).get("gpu_util_mean")
    st = d.get("stage_ms")
    stages = "/".join(f"{st[k]['median']:.2f}" for k in STAGES) if st else "-"
    x_ultra = f"{ips / ultra:.2f}" if ultra else "-"
    gpu_s = f"{gpu:.0f}" if gpu is not None else "-"
    return f"{batch:>5}  {name:<38}{ips:>9.1f}{ips / ceil:>11.2f}{x_ultra:>9}  {gpu_s:>6}  {stages}"


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'batch':>5}  {'variant':<38}{'img/s':>9}{'x ceiling':>11}{'x ultra':>9}  {'GPU %':>6}  stage ms pre/inf/post"
    )
    lines = [head]
    for r in rows:
        b, ceil = r["batch_size"], r["ceiling"]["images_per_s"]
        ultra = r.get("ultralytics", {}).get("images_per_s")
        lines.extend(_ceiling_lines(b, r["ceiling"], ultra))
        for name, d in r["ours"].items():
            ap = r.get("ap", {}).get(name)
            same = {True: " =seq", False: " !=seq"}.get(r.get("identical", {}).get(name), "")
            tail = f"  AP {ap:.4f}{same}" if ap is not None else ""
            rounds = d.get("rounds_images_per_s") or []
            if len(rounds) > 1:  # the median round is shown; every round's figure beside it
                tail += "  rounds " + "/".join(f"{x:.0f}" for x in rounds)
            lines.append(_fmt_line(b, f"(b) {name}", d, ceil, ultra) + tail)
        if r["sequential"]:
            lines.append(_fmt_line(b, "    sequential", r["sequential"], ceil, ultra))
        if ultra:
            lines.append(_fmt_line(b, "(c) ultralytics predict", r["ultralytics"], ceil, ultra))
        elif "ultralytics" in r:
            lines.append(f"{b:>5}  (c) ultralytics: {r['ultralytics'].get('skipped')}")
        for name, err in r.get("failed", {}).items():
            lines.append(f"{b:>5}  (b) {name}: FAILED {err}")
        lines.append(_verdict(r))
    return "\n".join(lines)


def _ceiling_lines(batch: int, c: dict[str, Any], ultra: float | None) -> list[str]:
    """The ceiling's configurations, the honest one (the best) marked and the x ceiling column against it."""
    ceil, best = c["images_per_s"], c.get("best", "serial")
    overlap = c.get("overlap")
    by_lanes = c.get("overlap_by_lanes") or ({str(overlap["lanes"]): overlap} if overlap else {})
    parts = [("serial", c.get("serial") or c, best == "serial")]
    for n, d in by_lanes.items():
        label = "overlapped" if len(by_lanes) == 1 else f"overlapped, {n} lanes"
        parts.append((label, d, best == "overlap" and d["images_per_s"] == overlap["images_per_s"]))
    return [
        _fmt_line(batch, f"(a) ceiling, {label}" + (" = ceiling" if marked else ""), d, ceil, ultra)
        for label, d, marked in parts
    ]


def _verdict(r: dict[str, Any]) -> str:
    """The first (recommended) variant against the sequential reference, the honest ceiling and the best."""
    same = "identical" if r["stats_identical"] else "DIFFERENT"
    dets = r.get("detections_identical", {}).get(r["backend"])
    line = f"{'':>5}  AP {r['backend']} {r['ap_ours']:.4f} vs sequential {r['ap_sequential']:.4f}: {same}"
    if dets is not None:
        line += f", detections {'identical' if dets else 'DIFFERENT'}"
    if "main_ratio_to_ceiling" in r:
        line += (
            f"; {r['main_ratio_to_ceiling']:.2f}x the ceiling ({r['ceiling'].get('best', 'serial')}), "
            f"{r['main_ratio_to_best']:.2f}x the best variant ({r['best_variant']})"
        )
    val = r.get("seconds_for_val2017") or {}
    if r["backend"] in val:
        fastest = min(val, key=val.__getitem__)
        line += (
            f"\n{'':>5}  start-up + {VAL2017_IMAGES} images: {val[r['backend']]:.1f} s "
            f"(start {r['ours'][r['backend']]['start_seconds']:.1f} s); soonest {fastest} {val[fastest]:.1f} s"
        )
        if r.get("kernel_compile_seconds") is not None:
            line += f"; each + {r['kernel_compile_seconds']:.1f} s compiling the post-processing kernels, once"
    return line


def _single_section(args: argparse.Namespace, ds: CocoDataset, gpu: bool, out: Path, report: dict[str, Any]) -> int:
    """``--decode-bench`` or ``--replay``: that section alone, its table and the JSON."""
    if args.decode_bench:
        from common.throughput.decode_bench import decode_report, format_decode
        from common.throughput.gpu_decode import import_nvimgcodec

        import_nvimgcodec()
        report["mode"] = "decode"
        paths = [ds.image_path(i) for i in ds.image_ids]
        report["decode"] = decode_report(paths, args.workers, list(args.batch_sizes), args.min_seconds, gpu)
        table = format_decode(report["decode"])
    else:
        report["mode"] = "replay"
        report["replay"] = replay_rows(args, ds, gpu)
        table = format_replay(report["replay"])
    report["complete"] = True
    atomic_write_json(out, stamp(report))
    print(table)
    print(f"json: {out}")
    return 0


def coco_bench(args: argparse.Namespace) -> int:
    """``--coco-bench N``: the COCOeval engines timed on the CPU; table + JSON."""
    check_range("--coco-bench", args.coco_bench, 1)
    check_range("--coco-bench-workers", args.coco_bench_workers, 0)
    check_range("--coco-bench-pace", args.coco_bench_pace, 0)
    instances = args.instances or args.data_root / "annotations" / "instances_val2017.json"
    given = args.coco_bench_detections
    check_output_paths({"--out": args.out}, {"--instances": instances, "--coco-bench-detections": given})
    source = load_coco(instances)
    detections = None
    if given is not None:
        if not given.is_file():
            raise UserError(f"--coco-bench-detections {given}: no such file; give an eval run's detections.json")
        try:
            detections = results_to_rows(load_detections(given))
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"--coco-bench-detections {given}: a detection is not image_id, category_id, bbox [x, y, w, h] and "
                f"score as numbers ({exc}); give an eval run's detections.json"
            ) from exc
        if not np.isin(detections[:, 0], source.getImgIds()).any():
            raise UserError(
                f"--coco-bench-detections {given}: none of its {len(detections)} detections is of an image of "
                f"{instances}; give the detections.json of an eval run on that instances file's images"
            )
    out = args.out or run_dir("bench-eval") / "bench.json"
    opts = CocoBenchOptions(
        args.coco_bench,
        batch_size=args.batch_sizes[-1],
        engines=tuple(args.coco_bench_engines),
        process_workers=args.coco_bench_workers,
        pace=args.coco_bench_pace,
    )
    print(f"COCOeval bench: {args.coco_bench} images from {instances} ...", file=sys.stderr)
    report = {
        "mode": "coco-bench",
        "instances": str(instances),
        "detections_file": str(given) if given is not None else None,
        "run": run_metadata(),
        **run_coco_bench(source, opts, detections),
    }
    report["complete"] = True
    atomic_write_json(out, report)
    print(format_coco_bench(report))
    print(f"json: {out}")
    return 0


def cuda_options(items: Sequence[str]) -> dict[str, str]:
    """``--provider-option`` items as the CUDA EP options of every GPU variant's sessions (UserError for a
    malformed item or another EP)."""
    return parse_provider_options(items, [CUDA_EP], where="the providers the GPU variants run on").get(CUDA_EP, {})


def _check_args(args: argparse.Namespace) -> None:
    """Every value check of the timing flags (UserError naming the flag), before any work."""
    check_range("--min-seconds", args.min_seconds, 0, lo_open=True)
    check_range("--time-to-metrics", args.time_to_metrics, 0)
    check_range("--time-to-metrics-repeats", args.time_to_metrics_repeats, 1)
    check_range("--rounds", args.rounds, 1)
    for mode in args.replay_modes or []:
        eval_options(mode)  # UserError for a malformed mode, before any work
    check_range("--workers", args.workers, 0)
    check_range("--lanes", args.lanes, 1)
    check_range("--switch-interval-ms", args.switch_interval_ms, 0, lo_open=True)
    unknown = [v for v in args.variants or [] if v not in KNOWN_VARIANTS and variant_spec(v) is None]
    if unknown:
        raise UserError(
            f"--variants {unknown[0]}: no such variant; choose from {', '.join(dict.fromkeys(KNOWN_VARIANTS))}"
            f" or {DEFAULTS_VARIANT}-lanes-N[-main-thread]"
        )
    for b in args.batch_sizes:
        check_range("--batch-sizes", b, 1)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    repo = Path(__file__).resolve().parents[2]
    if args.smoke:
        args.onnx_path = args.onnx_path or repo / "models/cv-models/yolov10n-synth/yolov10n-synth.onnx"
        args.data_root = repo / "datasets/synthcoco-mini"
        args.max_images, args.min_seconds, args.cpu, args.workers = 8, 0.5, True, min(args.workers, 2)
    if args.provider_option and (args.coco_bench or args.decode_bench or args.replay):
        raise UserError(
            "--provider-option sets the GPU variants' CUDA EP; drop it with --coco-bench, --decode-bench or --replay"
        )
    if args.coco_bench:
        return coco_bench(args)
    if args.onnx_path is None and not args.decode_bench:
        raise UserError("--onnx-path is required (or --smoke, --decode-bench or --coco-bench)")
    if args.onnx_path is not None and not args.onnx_path.is_file():
        raise UserError(f"ONNX model not found: {args.onnx_path}; check --onnx-path")
    instances = args.instances or args.data_root / "annotations" / "instances_val2017.json"
    images = args.images_dir or args.data_root / "val2017"
    _check_args(args)
    cuda_opts = cuda_options(args.provider_option)
    model_inputs = {"--onnx-path": args.onnx_path} if args.onnx_path is not None else {}
    check_output_paths(
        {"--out": args.out},
        {**model_inputs, "--instances": instances},
        protected_dirs={"--images-dir": images},
        force=args.force,
    )
    gpu = _gpu_available(args.cpu)
    if args.provider_option and not gpu:
        raise UserError(
            "--provider-option sets the GPU variants' CUDA EP, and this run has none (no GPU or --cpu): drop it"
        )
    ds = open_dataset(instances, images, args.max_images)
    out = args.out or run_dir("bench-eval") / "bench.json"
    rows: list[dict[str, Any]] = []
    report = {
        "model": str(args.onnx_path) if args.onnx_path is not None else None,
        "model_sha256": sha256_file(args.onnx_path) if args.onnx_path is not None else None,
        "images": len(ds.image_ids),
        "device": "gpu" if gpu else "cpu",
        "workers": args.workers,
        "lanes": args.lanes,
        "cuda_provider_options": cuda_opts,
        "switch_interval_ms": args.switch_interval_ms,
        "min_seconds": args.min_seconds,
        "batch_sizes": list(args.batch_sizes),
        "complete": False,
        "rows": rows,
        "run": run_metadata(),
    }
    if args.decode_bench or args.replay:
        return _single_section(args, ds, gpu, out, report)
    for batch in args.batch_sizes:
        print(f"batch {batch}: measuring ...", file=sys.stderr)
        row = bench_batch(args, ds, batch, gpu, cuda_opts)
        if not args.no_ultralytics:
            n = math.ceil(row["best_ours_images_per_s"] * args.min_seconds / 3)
            row["ultralytics"] = at_least(
                lambda k, b=batch: run_ultralytics(args.onnx_path, ds, b, gpu, k), n, args.min_seconds
            )
            if "images_per_s" in row["ultralytics"]:
                row["ratio_to_ultralytics"] = row["best_ours_images_per_s"] / row["ultralytics"]["images_per_s"]
        rows.append(row)
        # each finished batch size is kept at once: a long sweep cut short still leaves its rows
        report["complete"] = len(rows) == len(args.batch_sizes)
        atomic_write_json(out, stamp(report))
        if len(args.batch_sizes) > 1:
            print(format_table([row]), file=sys.stderr, flush=True)
    if args.time_to_metrics > 0:
        print(f"time to metrics: {args.time_to_metrics} images ...", file=sys.stderr)
        report["time_to_metrics"] = time_to_metrics(args, ds, gpu, args.time_to_metrics, out.parent, cuda_opts)
        atomic_write_json(out, stamp(report))
    print(format_table(rows))
    if "time_to_metrics" in report:
        print(format_ttm(report["time_to_metrics"]))
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
