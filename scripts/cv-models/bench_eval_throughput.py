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
import math
import sys
from collections.abc import Sequence
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
from common.core.results import atomic_write_json, check_output_paths, run_dir, sha256_file, stamp
from common.core.sysinfo import run_metadata
from common.data.coco import CocoDataset, load_coco, open_dataset, results_to_rows
from common.data.coco_bench import CocoBenchOptions, format_coco_bench, run_coco_bench
from common.data.coco_partition import CPUS_PER_WORKER, MAX_WORKERS
from common.eval.cli import DEFAULT_DATA_ROOT
from common.eval.pipeline import default_workers
from common.ort.options import CUDA_EP, parse_provider_options
from common.report.parity import load_detections
from common.throughput.bench.batch import bench_batch
from common.throughput.bench.capacity import format_replay, replay_rows
from common.throughput.bench.modes import eval_options
from common.throughput.bench.options import BenchOptions
from common.throughput.bench.runs import at_least, run_ultralytics
from common.throughput.bench.table import format_table
from common.throughput.bench.ttm import format_ttm, time_to_metrics
from common.throughput.bench.variants import DEFAULTS_VARIANT, GPU_VARIANTS, KNOWN_VARIANTS, gpu_available, variant_spec

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


def _single_section(
    args: argparse.Namespace, opts: BenchOptions | None, ds: CocoDataset, gpu: bool, out: Path, report: dict[str, Any]
) -> int:
    """``--decode-bench`` or ``--replay`` (``opts``: the model's options): that section alone, its table and
    the JSON."""
    if opts is None:
        from common.throughput.bench.decode import decode_report, format_decode
        from common.throughput.gpu_decode import import_nvimgcodec

        import_nvimgcodec()
        report["mode"] = "decode"
        paths = [ds.image_path(i) for i in ds.image_ids]
        report["decode"] = decode_report(paths, args.workers, list(args.batch_sizes), args.min_seconds, gpu)
        table = format_decode(report["decode"])
    else:
        report["mode"] = "replay"
        report["replay"] = replay_rows(opts, ds, gpu, list(args.batch_sizes))
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
    check_output_paths(
        {"--out": args.out}, {"--instances": instances, "--coco-bench-detections": given}, force=args.force
    )
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
    atomic_write_json(out, stamp(report))
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


def bench_options(args: argparse.Namespace, cuda_opts: dict[str, str]) -> BenchOptions:
    """The timed sections' options from the checked flags (``--onnx-path`` given)."""
    return BenchOptions(
        onnx_path=args.onnx_path,
        workers=args.workers,
        lanes=args.lanes,
        variants=tuple(args.variants or ()),
        rounds=args.rounds,
        min_seconds=args.min_seconds,
        skip_sequential=args.skip_sequential,
        switch_interval_ms=args.switch_interval_ms,
        trt_api=args.trt_backend,
        cuda_options=cuda_opts,
        ttm_repeats=args.time_to_metrics_repeats,
        replay_modes=tuple(args.replay_modes or ()),
    )


def _smoke(args: argparse.Namespace) -> None:
    """``--smoke``: the bundled model and set, 8 images, half a second a figure, the CPU."""
    repo = Path(__file__).resolve().parents[2]
    args.onnx_path = args.onnx_path or repo / "models/cv-models/yolov10n-synth/yolov10n-synth.onnx"
    args.data_root = repo / "datasets/synthcoco-mini"
    args.max_images, args.min_seconds, args.cpu, args.workers = 8, 0.5, True, min(args.workers, 2)


def _bench_rows(
    args: argparse.Namespace, opts: BenchOptions, ds: CocoDataset, gpu: bool, out: Path, report: dict[str, Any]
) -> None:
    """Every batch size's row (and Ultralytics beside it), each written to ``out`` as soon as it is done, then
    the time to metrics."""
    rows = report["rows"]
    for batch in args.batch_sizes:
        print(f"batch {batch}: measuring ...", file=sys.stderr)
        row = bench_batch(opts, ds, batch, gpu)
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
        n, batch = args.time_to_metrics, args.batch_sizes[-1]
        report["time_to_metrics"] = time_to_metrics(opts, ds, gpu, n, batch)
        atomic_write_json(out, stamp(report))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.smoke:
        _smoke(args)
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
    gpu = gpu_available(args.cpu)
    if args.provider_option and not gpu:
        raise UserError(
            "--provider-option sets the GPU variants' CUDA EP, and this run has none (no GPU or --cpu): drop it"
        )
    ds = open_dataset(instances, images, args.max_images)
    out = args.out or run_dir("bench-eval") / "bench.json"
    opts = bench_options(args, cuda_opts) if args.onnx_path is not None else None
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
        "rows": [],
        "run": run_metadata(),
    }
    if args.decode_bench or args.replay:
        return _single_section(args, None if args.decode_bench else opts, ds, gpu, out, report)
    assert opts is not None  # --onnx-path is required past here
    _bench_rows(args, opts, ds, gpu, out, report)
    print(format_table(report["rows"]))
    if "time_to_metrics" in report:
        print(format_ttm(report["time_to_metrics"]))
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
