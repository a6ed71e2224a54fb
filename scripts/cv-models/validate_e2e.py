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
--backends and could not run; 2 bad usage.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.core.cli import check_range, make_parser, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import check_output_dir, run_dir, timestamp
from common.data.check import SKIP_FLAG, check_dataset, describe
from common.eval.checks import ALLOW_IMGSZ_FLAG, check_onnx_input
from common.eval.options import DEFAULT_DATA_ROOT, DataOptions, EvalOptions, default_workers
from common.model.yolov10 import LAYOUTS, PostprocessOptions
from common.report import validate as V
from common.report.compare import PLOT_SKIPPED, ParityOptions, collect, summarize
from common.report.parity import DEFAULT_THRESHOLDS, parse_threshold_overrides

QUANT_MODES = ("int8", "fp8")


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        (__doc__ or "").split("\n\n")[0],
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
    m.add_argument("--candidate", type=Path, default=None, help="Q/DQ (or fp16) ONNX of the same model to validate too")
    m.add_argument(
        "--quantize",
        choices=QUANT_MODES,
        default=None,
        help="make the candidate with quantize_onnx.py (nvidia-modelopt) instead of --candidate",
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
    b.add_argument("--output-root", type=Path, default=Path("tmp"), help="runs go to <output-root>/<task>/<timestamp>/")
    b.add_argument("--task", default="validate", help="run folder name under --output-root (default: %(default)s)")
    b.add_argument("--step-timeout", type=float, default=3600, help="seconds per build/eval subprocess (default 3600)")
    _add_dataset_args(parser)
    _add_parity_args(parser)
    # TEST HOOK (not for users): a worker script that installs a simulated TensorRT-RTX runtime in its own process
    # (tests/validate_double_worker.py: tests/trt_double.py, ONNX Runtime on the CPU) and then runs the worker; the
    # TensorRT rows run it after a real build. The product never imports the double.
    parser.add_argument("--trt-runtime-double", type=Path, default=None, help=argparse.SUPPRESS)
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
    d.add_argument("--image-ids-list", type=Path, default=None, help="text file of image ids, one per line")
    d.add_argument(
        SKIP_FLAG,
        action="store_true",
        help="leave missing or unreadable images out of every evaluation instead of refusing (default: refuse)",
    )
    d.add_argument("--imgsz", type=int, default=640, help="square network input size (default 640)")
    d.add_argument("--conf", type=float, default=0.001, help="score threshold of the evaluation (default 0.001)")
    d.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    d.add_argument("--max-det", type=int, default=300, help="max detections per image (default 300)")
    d.add_argument("--output-format", choices=("auto", *LAYOUTS), default="auto", help="model output layout")
    d.add_argument("--output-name", default=None, help="the detection output of a model with several outputs")
    d.add_argument(
        ALLOW_IMGSZ_FLAG, action="store_true", help="evaluate at an --imgsz other than the model's exported size"
    )
    d.add_argument("--workers", type=int, default=default_workers(), help="image loader threads per evaluator")
    d.add_argument("--warmup-runs", type=int, default=10, help="warm-up inferences before timing (default 10)")


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
        "--min-mean-iou", action="append", default=[], metavar="[PREC=]X", help="minimum mean IoU of matches"
    )
    p.add_argument(
        "--max-median-dscore",
        action="append",
        default=[],
        metavar="[PREC=]X",
        help="maximum median |Δscore| of matches",
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


def eval_args(args: argparse.Namespace) -> list[str]:
    out = [
        "--data-root",
        str(args.data_root),
        "--imgsz",
        str(args.imgsz),
        "--conf",
        str(args.conf),
        "--iou",
        str(args.iou),
        "--max-det",
        str(args.max_det),
        "--output-format",
        args.output_format,
        "--workers",
        str(args.workers),
        "--warmup-runs",
        str(args.warmup_runs),
    ]
    for flag in ("max_images", "instances", "images_dir", "image_ids_list"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    if args.skip_unreadable_images:
        out.append(SKIP_FLAG)
    if args.allow_imgsz_mismatch:
        out.append(ALLOW_IMGSZ_FLAG)
    if args.output_name is not None:
        out += ["--output-name", args.output_name]
    return out


def make_root(args: argparse.Namespace) -> Path:
    root = args.output_root
    try:
        return run_dir(args.task, root=root, stamp=timestamp())
    except UserError as exc:
        raise UserError(f"--output-root {root}: {exc}; pass a writable --output-root") from None


def check_quantize_python(python: str, mode: str) -> str:
    try:
        proc = subprocess.run(
            [python, "-c", "import modelopt; print(modelopt.__version__)"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except OSError as exc:
        raise UserError(f"--quantize-python {python}: cannot run it ({exc.strerror or exc})") from None
    except subprocess.TimeoutExpired:
        raise UserError(f"--quantize-python {python}: `import modelopt` did not finish in 300 s") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["import failed"])[-1]
        raise UserError(
            f"--quantize {mode}: nvidia-modelopt is not importable by --quantize-python {python} ({last}); pass the "
            "quant environment's interpreter (e.g. --quantize-python .venv-quant/bin/python) or make the candidate "
            "elsewhere and pass --candidate"
        )
    return proc.stdout.strip()


def quantize(args: argparse.Namespace, root: Path, images_dir: Path) -> tuple[Path, V.Step]:
    folder = root / "quantize"
    folder.mkdir(parents=True, exist_ok=True)
    calib = args.calib
    if calib is None:
        calib = folder / "calib.npy"
        step = V.run_step(
            V.Step(
                "calib",
                [
                    sys.executable,
                    str(V.SCRIPTS / "make_calib_npy.py"),
                    "--images-dir",
                    str(images_dir),
                    "--num-images",
                    str(args.calib_images),
                    "--seed",
                    "0",
                    "--imgsz",
                    str(args.imgsz),
                    "--out",
                    str(calib),
                    "--no-progress",
                ],
            ),
            folder,
            args.step_timeout,
        )
        if step.rc != 0:
            return calib, step
    out = folder / f"{args.onnx_path.stem}.{args.quantize}.onnx"
    cmd = [
        args.quantize_python,
        str(V.SCRIPTS / "quantize_onnx.py"),
        "--mode",
        args.quantize,
        "--onnx-path",
        str(args.onnx_path),
        "--calib",
        str(calib),
        "--out",
        str(out),
        "--force",
    ]
    return out, V.run_step(V.Step("quantize", cmd), folder, args.step_timeout)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return V.worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    keys, parity = _check_flags(args)
    # --- inputs first: every usage error before anything runs
    inputs = _open_inputs(args)
    root = make_root(args)
    print(f"run root: {root}")

    # --- availability (trt-doctor)
    doc = V.run_doctor()
    V.write_json(root / "doctor.json", doc)
    avail = V.availability(doc, keys, runtime_double=args.trt_runtime_double is not None)
    for k in keys:  # each skip reason is said here, once (run_backend does not repeat it per model)
        print(f"  {k:<11} {'available' if avail[k].ok else 'skipped: ' + avail[k].reason}")

    quant_step = _quantize_candidate(args, root, inputs) if args.quantize is not None else None

    # --- sample images for the raw-output comparison
    tensor_inputs = None
    tensor_ids: list[int] = []
    if args.tensor_samples > 0:
        tensor_inputs = root / "tensor-inputs.npy"
        tensor_ids = V.sample_inputs(inputs.dataset, args.imgsz, args.tensor_samples, tensor_inputs)

    cfg = V.RunConfig(
        root=root,
        eval_args=eval_args(args),
        step_timeout=args.step_timeout,
        runtime_double=args.trt_runtime_double,
        tensor_inputs=tensor_inputs,
    )
    models = [m for m in (inputs.base, inputs.cand) if m is not None]
    runs = [V.run_backend(cfg, key, model, avail[key]) for model in models for key in keys]
    record = {
        "schema_version": V.VALIDATION_SCHEMA_VERSION,
        "run_root": str(root),
        "baseline_model": inputs.base.label,
        "models": [m.to_dict() for m in models],
        "quantize": quant_step.to_dict() if quant_step else None,
        "backends_requested": keys,
        "availability": {k: {"ok": a.ok, "reason": a.reason} for k, a in avail.items()},
        "runs": [r.to_dict() for r in runs],
        "tensor_samples": tensor_ids,
        "tensor_errors": V.raw_output_errors(runs, keep=args.keep_tensors),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    V.write_json(root / "validation.json", record)

    # --- compare: ΔAP, parity, summary files
    problems = _compare(args, root, inputs.base, runs, parity)
    problems += _run_problems(args, root, runs, quant_step)
    record["verdict"] = {"pass": not problems, "problems": problems}
    V.write_json(root / "validation.json", record)
    return _report(root, problems)


def _data_options(args: argparse.Namespace) -> DataOptions:
    return DataOptions(
        args.data_root,
        args.instances,
        args.images_dir,
        args.max_images,
        args.image_ids_list,
        args.skip_unreadable_images,
    )


def _eval_options(args: argparse.Namespace) -> EvalOptions:
    """The evaluation flags validate passes on to each evaluator, checked here once before any step runs."""
    return EvalOptions(
        imgsz=args.imgsz,
        workers=args.workers,
        output_format=args.output_format,
        output_name=args.output_name,
        post=PostprocessOptions(args.conf, args.iou, args.max_det),
        warmup_runs=args.warmup_runs,
    )


def _check_flags(args: argparse.Namespace) -> tuple[list[str], ParityOptions]:
    """Ranges and combinations of the flags; the backends to run and the parity thresholds."""
    if args.candidate is not None and args.quantize is not None:
        raise UserError("pass either --candidate ONNX or --quantize MODE, not both")
    check_range("--tensor-samples", args.tensor_samples, 0)
    check_range("--calib-images", args.calib_images, 1)
    check_range("--worst-images", args.worst_images, 0)
    check_range("--step-timeout", args.step_timeout, 0, lo_open=True)
    check_range("--max-ap-drop", args.max_ap_drop, 0)
    check_range("--parity-iou", args.parity_iou, 0, 1, lo_open=True)
    check_range("--parity-conf", args.parity_conf, 0, 1)
    _eval_options(args)
    check_output_dir("--output-root", args.output_root)
    keys = list(V.BACKEND_KEYS) if "all" in args.backends else list(dict.fromkeys(args.backends))
    parity = ParityOptions(
        iou=args.parity_iou,
        conf=args.parity_conf,
        worst=args.worst_images,
        min_matched=parse_threshold_overrides(args.min_matched, "--min-matched"),
        min_mean_iou=parse_threshold_overrides(args.min_mean_iou, "--min-mean-iou"),
        max_median_dscore=parse_threshold_overrides(args.max_median_dscore, "--max-median-dscore"),
    )
    return keys, parity


@dataclass
class _Inputs:
    """The dataset and the models, opened and checked before anything runs."""

    dataset: Any
    images: Path
    base: V.ModelInfo
    cand: V.ModelInfo | None
    cand_label: str | None


def _open_inputs(args: argparse.Namespace) -> _Inputs:
    from common.data.coco import open_dataset

    data = _data_options(args)
    images = data.images_path
    dataset = open_dataset(data.instances_path, images, data.max_images, data.image_ids_list)
    dataset.check_report = check_dataset(dataset, args.skip_unreadable_images)
    print(f"dataset check: {describe(dataset.check_report)}")
    base_label, cand_label = V.model_labels(
        args.onnx_path,
        args.candidate or (Path(f"{args.onnx_path.stem}.{args.quantize}.onnx") if args.quantize else None),
    )
    base = V.model_info(args.onnx_path, "baseline", "--onnx-path", base_label)
    check_onnx_input(
        "--onnx-path",
        args.onnx_path,
        args.imgsz,
        output_format=args.output_format,
        output_name=args.output_name,
        allow_imgsz_mismatch=args.allow_imgsz_mismatch,
    )
    cand = None
    if args.candidate is not None:
        cand = V.model_info(args.candidate, "candidate", "--candidate", cand_label or "candidate")
        V.check_candidate(base, cand, "--candidate")
    if args.quantize is not None:
        if not (V.SCRIPTS / "quantize_onnx.py").is_file():
            raise UserError("--quantize: scripts/cv-models/quantize_onnx.py is missing; pass --candidate instead")
        if args.calib is not None and not args.calib.is_file():
            raise UserError(f"--calib {args.calib}: no such file; make one with make_calib_npy.py or leave it out")
        version = check_quantize_python(args.quantize_python, args.quantize)
        print(f"quantize: nvidia-modelopt {version} in {args.quantize_python}")
    if args.trt_runtime_double is not None and not args.trt_runtime_double.is_file():
        raise UserError(f"--trt-runtime-double {args.trt_runtime_double}: no such worker script (test hook)")
    return _Inputs(dataset, images, base, cand, cand_label)


def _quantize_candidate(args: argparse.Namespace, root: Path, inputs: _Inputs) -> V.Step:
    """The candidate by quantization (``inputs.cand`` is set when it succeeds)."""
    print(f"quantize: {args.quantize} with {args.quantize_python} ...")
    out, step = quantize(args, root, inputs.images)
    if step.rc == 0:
        inputs.cand = V.model_info(out, "candidate", "--quantize", inputs.cand_label or "candidate")
        V.check_candidate(inputs.base, inputs.cand, "--quantize")
        print(f"quantize: {out} ({step.seconds:.1f} s)")
    else:
        print(f"quantize FAILED: {step.error}; validating the baseline only", file=sys.stderr)
    return step


def _compare(
    args: argparse.Namespace, root: Path, base: V.ModelInfo, runs: Sequence[V.BackendRun], parity: ParityOptions
) -> list[str]:
    """ΔAP, parity and the summary files; the problems they found."""
    if not any(r.status == "ok" for r in runs):
        return ["no backend produced metrics; nothing to compare"]
    col = collect([root])
    col.baseline_model = base.label
    summary = summarize(col, root, parity)
    problems = [f"parity: {f}" for f in summary["parity_failures"]]
    if args.max_ap_drop is not None:
        problems += [
            f"accuracy: {r['label']} ΔAP {r['delta_ap']:+.4f} is below -{args.max_ap_drop}"
            for r in summary["rows"]
            if r["model"] != base.label and r["delta_ap"] < -args.max_ap_drop
        ]
    print()
    text = (root / "summary.md").read_text(encoding="utf-8")
    print("\n".join(ln for ln in text.splitlines() if ln.startswith(("|", ">"))))
    if not summary["plot"]:
        print(PLOT_SKIPPED)
    return problems


def _run_problems(
    args: argparse.Namespace, root: Path, runs: Sequence[V.BackendRun], quant_step: V.Step | None
) -> list[str]:
    """Failed runs, backends asked for by name but skipped (one reason per backend), a failed quantization."""
    problems = [f"failed: {r.model.label} / {r.backend}: {r.reason}" for r in runs if r.status == "failed"]
    if "all" not in args.backends:
        skipped: dict[str, list[V.BackendRun]] = {}
        for r in runs:
            if r.status == "skipped":
                skipped.setdefault(r.backend, []).append(r)
        problems += [
            f"requested but skipped: {key} ({', '.join(r.model.label for r in rs)}): {rs[0].reason}"
            for key, rs in skipped.items()
        ]  # one reason per backend, not per model
    if quant_step is not None and quant_step.rc != 0:
        problems.append(f"quantize failed: {quant_step.error} (log: {root / 'quantize' / quant_step.log})")
    return problems


def _report(root: Path, problems: Sequence[str]) -> int:
    print()
    print(f"summary:    {root / 'summary.md'}")
    print(f"validation: {root / 'validation.json'}")
    if problems:
        print("VALIDATION FAILED:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print("VALIDATION PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
