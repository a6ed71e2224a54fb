#!/usr/bin/env python3
"""Validate a YOLOv10 ONNX and its Q/DQ candidate on every available backend, in one run root.

Runs ORT CPU, ORT CUDA, direct TensorRT (build + eval), direct TensorRT-RTX, the ORT TensorRT EP
and the ORT TensorRT-RTX EP on the baseline and the candidate, each in its own subprocess, into
tmp/<task>/<timestamp>/<model>/<backend>/. Unavailable backends are recorded as skipped with
trt-doctor's reason; a failing backend is recorded and the others carry on. Then each backend's
detections are matched per image to the reference backend's (ORT CUDA, else ORT CPU) on the same
model, raw outputs of a few sample images are compared element-wise (informational), and
summary.md / summary.json / summary.png are written (compare_runs.py).

Exit code: 0 all good; 1 a backend failed, broke its parity threshold, or was asked for by
--backends and could not run; 2 bad usage; 3 INCONCLUSIVE: nothing could be compared (every backend
but the reference was skipped and there is no candidate, or the runs evaluated different images).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import add_old_spelling, check_range, make_parser, run_main, setup_logging
from common.core.results import check_output_dir
from common.data.check import SKIP_FLAG
from common.eval.checks import ALLOW_IMGSZ_FLAG
from common.eval.cli import add_head_flags, data_options, warmup_runs_arg
from common.eval.options import DEFAULT_DATA_ROOT, EvalOptions, default_workers
from common.model.yolov10 import PostprocessOptions
from common.report import validate as V
from common.report.compare import ParityOptions
from common.report.parity import DEFAULT_THRESHOLDS, parse_threshold_overrides
from common.report.validate_run import QUANT_MODES, ValidateOptions, validate


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    parser = make_parser(
        doc.split("\n\n")[0] + "\n\n" + doc[doc.index("Exit code") :].strip(),
        [
            "python scripts/cv-models/validate_e2e.py --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--candidate tmp/quant/yolov10m.int8.onnx --max-images 500",
            "python scripts/cv-models/validate_e2e.py --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--quantize int8 --quantize-python .venv-quant/bin/python --max-images 0",
            "python scripts/cv-models/validate_e2e.py --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--candidate tmp/quant/yolov10m.int8.onnx --backends ort-cpu ort-cuda --max-images 500",
        ],
    )
    m = parser.add_argument_group("models")
    m.add_argument("--onnx-path", type=Path, required=True, help="baseline YOLOv10 ONNX (float32)")
    m.add_argument(
        "--candidate",
        type=Path,
        default=None,
        help="Q/DQ (or fp16) ONNX of the same model to validate too (default: none)",
    )
    m.add_argument(
        "--quantize",
        choices=QUANT_MODES,
        default=None,
        help="make the candidate with quantize_onnx.py (nvidia-modelopt) instead of --candidate (default: none)",
    )
    m.add_argument(
        "--quantize-python",
        default=sys.executable,
        help="interpreter with nvidia-modelopt for --quantize, e.g. .venv-quant/bin/python (default: this one)",
    )
    m.add_argument(
        "--calib",
        type=Path,
        default=None,
        help="calibration .npy (make_calib_npy.py) for --quantize (default: made from --calib-images "
        "images of the evaluation image folder)",
    )
    m.add_argument("--calib-images", type=int, default=32, help="images for the default calibration set (default 32)")
    b = parser.add_argument_group("backends and outputs")
    b.add_argument(
        "--backends",
        nargs="+",
        default=["all"],
        choices=["all", *V.BACKEND_KEYS],
        metavar="BACKEND",
        help=f"backends to run: all (default) or some of {', '.join(V.BACKEND_KEYS)}; with an explicit "
        "list, one that cannot run makes the exit code 1",
    )
    out = b.add_argument(
        "--out",
        type=Path,
        default=Path("tmp"),
        help="output folder: runs go to <out>/<task>/<timestamp>/ (default: tmp)",
    )
    add_old_spelling(b, "--output-root", out)
    b.add_argument("--task", default="validate", help="run folder name under --out (default: %(default)s)")
    b.add_argument("--step-timeout", type=float, default=3600, help="seconds per build/eval subprocess (default 3600)")
    _add_dataset_args(parser)
    _add_parity_args(parser)
    return parser


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    d = parser.add_argument_group("dataset and evaluation (passed to every evaluator)")
    d.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="COCO root with val2017/ and annotations/instances_val2017.json (default: %(default)s)",
    )
    d.add_argument("--instances", type=Path, default=None, help="instances JSON (default: under --data-root)")
    d.add_argument("--images-dir", type=Path, default=None, help="image folder (default: <data-root>/val2017)")
    d.add_argument(
        "--max-images",
        type=int,
        default=None,
        help="first N images by id; <= 0: all (default 100; with --image-ids-list: the whole list)",
    )
    d.add_argument(
        "--image-ids-list",
        type=Path,
        default=None,
        help="text file of image ids, one per line: all of them are evaluated (default: none)",
    )
    d.add_argument(
        SKIP_FLAG,
        action="store_true",
        help="leave missing or unreadable images out of every evaluation instead of refusing (default: refuse)",
    )
    d.add_argument("--imgsz", type=int, default=640, help="square network input size (default 640)")
    d.add_argument("--conf", type=float, default=0.001, help="score threshold of the evaluation (default 0.001)")
    d.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    d.add_argument("--max-det", type=int, default=300, help="max detections per image (default 300)")
    add_head_flags(d)
    d.add_argument(
        ALLOW_IMGSZ_FLAG, action="store_true", help="evaluate at an --imgsz other than the model's exported size"
    )
    d.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="image loader threads per evaluator (default: %(default)s)",
    )
    d.add_argument(
        "--warmup-runs",
        type=warmup_runs_arg,
        default="auto",
        help="warm-up inferences before timing: auto (default: 1 on the CPU, 10 on a GPU) or a count",
    )


def _add_parity_args(parser: argparse.ArgumentParser) -> None:
    p = parser.add_argument_group("parity (detections matched per image to the reference backend)")
    p.add_argument("--parity-iou", type=float, default=0.5, help="IoU for a match, same class (default 0.5)")
    p.add_argument(
        "--parity-conf",
        type=float,
        default=0.25,
        help="detections at or above this score must find a partner (default 0.25)",
    )
    defaults = "; ".join(
        f"{k} {t.min_matched}/{t.min_mean_iou}/{t.max_median_dscore}"
        for k, t in DEFAULT_THRESHOLDS.items()
        if k in ("fp32", "fp16", "int8", "fp8")
    )
    p.add_argument(
        "--min-matched",
        action="append",
        default=[],
        metavar="[PREC=]X",
        help=f"minimum matched fraction (defaults matched/IoU/|Δscore| per precision: {defaults})",
    )
    p.add_argument(
        "--min-mean-iou",
        action="append",
        default=[],
        metavar="[PREC=]X",
        help="minimum mean IoU of matches (default: by precision, as --min-matched says)",
    )
    p.add_argument(
        "--max-median-dscore",
        action="append",
        default=[],
        metavar="[PREC=]X",
        help="maximum median |Δscore| of matches (default: by precision, as --min-matched says)",
    )
    p.add_argument(
        "--max-ap-drop",
        type=float,
        default=None,
        help="fail when a candidate row's mAP_50_95 is more than this below the reference row's "
        "(default: report ΔAP only)",
    )
    p.add_argument("--worst-images", type=int, default=5, help="images with the worst disagreement to list (default 5)")
    p.add_argument(
        "--tensor-samples", type=int, default=4, help="sample images for the raw-output error (default 4; 0 = off)"
    )
    p.add_argument("--keep-tensors", action="store_true", help="keep each backend's raw_outputs.npz")


def options_from_args(args: argparse.Namespace) -> ValidateOptions:
    """The flags as a validated ``ValidateOptions`` (the parity flags' ranges checked here)."""
    check_range("--worst-images", args.worst_images, 0)
    check_range("--parity-iou", args.parity_iou, 0, 1, lo_open=True)
    check_range("--parity-conf", args.parity_conf, 0, 1)
    check_output_dir("--out", args.out)
    parity = ParityOptions(
        iou=args.parity_iou,
        conf=args.parity_conf,
        worst=args.worst_images,
        min_matched=parse_threshold_overrides(args.min_matched, "--min-matched"),
        min_mean_iou=parse_threshold_overrides(args.min_mean_iou, "--min-mean-iou"),
        max_median_dscore=parse_threshold_overrides(args.max_median_dscore, "--max-median-dscore"),
    )
    data = data_options(args)
    ev = EvalOptions(
        imgsz=args.imgsz,
        workers=args.workers,
        output_format=args.output_format,
        output_name=args.output_name,
        post=PostprocessOptions(args.conf, args.iou, args.max_det),
        warmup_runs=args.warmup_runs,
        progress=False,
    )
    named = "all" not in args.backends
    return ValidateOptions(
        onnx_path=args.onnx_path,
        data=data,
        eval=ev,
        parity=parity,
        candidate=args.candidate,
        quantize=args.quantize,
        quantize_python=args.quantize_python,
        calib=args.calib,
        calib_images=args.calib_images,
        backends=tuple(dict.fromkeys(args.backends)) if named else V.BACKEND_KEYS,
        backends_named=named,
        out=args.out,
        task=args.task,
        step_timeout=args.step_timeout,
        allow_imgsz_mismatch=args.allow_imgsz_mismatch,
        max_ap_drop=args.max_ap_drop,
        tensor_samples=args.tensor_samples,
        keep_tensors=args.keep_tensors,
        record=vars(args),
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:  # one backend x model of a running validation, in its own process
        return V.worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return validate(options_from_args(args))


if __name__ == "__main__":
    sys.exit(run_main(main))
