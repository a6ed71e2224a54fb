#!/usr/bin/env python3
"""Find the fewest layer groups to keep in FP16 so that an INT8/FP8 YOLOv10 stays within an mAP budget of FP16.

References (FP16 by ModelOpt AutoCast, INT8-all or FP8-all by ModelOpt PTQ under a small calibration
sweep), a leave-one-group-out ranking on a screening subset, a bisection over the ranked prefixes,
confirmation on the full image set, and a prune pass; every candidate differs only in ModelOpt's
nodes_to_exclude and reuses one calibration. Each mAP difference is paired (same images) with a
bootstrap interval over images. Candidates are scored with ONNX Runtime, which runs Q/DQ as fake
quantization: a proxy for TensorRT's INT8/FP8 kernels.

ModelOpt runs in its own environment through a worker process (--quant-python); this script and the
scoring run in the environment that has the ONNX Runtime to score with. Writes a run folder:
search.jsonl, state.json (--resume), summary.md (with the verdict line), layer-sensitivity-report.json,
best/ (model.onnx, nodes_to_exclude.txt, quantize_command.sh, calibration.cache, metrics.json, the
engine) and pareto.png / sensitivity.png / ladder.png.

On a machine without ModelOpt, give the references made elsewhere (--references-only writes them):
--fp16-onnx and one --int8-onnx per calibration. --resume of a finished run scores nothing again: it
finishes the TensorRT build (--build final) and the plots on another machine.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import check_range, make_parser, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import check_output_dir
from common.data.check import check_dataset
from common.data.coco import open_dataset
from common.eval.cli import DEFAULT_DATA_ROOT, check_onnx_input
from common.eval.options import DataOptions, default_workers
from common.quant.groups import GROUPINGS
from common.quant.search_eval import ScoreOptions
from common.quant.search_run import RunConfig, run
from common.quant.search_session import BUILD_MODES, SearchOptions
from common.quant.search_state import STATE_FILE, saved_providers
from common.quant.worker_client import default_quant_python


def default_quant_workers() -> int:
    cores = os.cpu_count() or 1
    return 1 if cores < 8 else min(3, cores // 4)


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        __doc__ or "",
        [
            "pixi run -e rtx5090-quant search-precision --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--mode int8 --calib tmp/calib/coco-train100.npy --budget 0.005 --max-evals 40 --screen-images 500 "
            "--providers CUDAExecutionProvider CPUExecutionProvider --calibration-eps cuda:0 cpu",
            "python scripts/cv-models/search_precision.py "
            "--onnx-path models/cv-models/yolov10n-synth/yolov10n-synth.onnx --calib tmp/calib/mini16.npy "
            "--data-root datasets/synthcoco-mini --max-images 0 --screen-images 16 "
            "--budget 0.02   # a small CPU run on the bundled model and images",
            "python scripts/cv-models/search_precision.py ... --out tmp/search/run1 --resume   # continue a run",
            "python scripts/cv-models/search_precision.py --onnx-path models/cv-models/yolov10m/yolov10m.onnx "
            "--calib tmp/calib/coco-train100.npy --references-only --out tmp/refs/yolov10m   # ModelOpt's part "
            "alone; prints the --fp16-onnx/--int8-onnx flags for a machine without ModelOpt",
        ],
    )
    _add_model_args(parser.add_argument_group("model and precision"))
    _add_search_args(parser.add_argument_group("search"))
    _add_data_args(parser.add_argument_group("images (COCO)"))
    _add_output_args(parser.add_argument_group("outputs and environment"))
    return parser


def _add_model_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--onnx-path", type=Path, required=True, help="float32 YOLOv10 ONNX model (no Q/DQ nodes)")
    g.add_argument("--mode", choices=("int8", "fp8"), default="int8", help="quantized precision (default int8)")
    g.add_argument(
        "--calib",
        type=Path,
        help="calibration tensor .npy from make_calib_npy.py (required unless --int8-onnx; default: none)",
    )
    g.add_argument(
        "--calib-methods",
        nargs="+",
        choices=("entropy", "max"),
        help="calibration methods of the sweep (default: entropy max for int8, max for fp8)",
    )
    g.add_argument(
        "--calib-counts",
        nargs="+",
        type=int,
        default=[0],
        help="calibration images of the sweep, the first N of --calib (default: 0 = all)",
    )
    g.add_argument(
        "--calibration-eps",
        nargs="+",
        default=None,
        help="ONNX Runtime EPs for ModelOpt's calibration runs (default: cuda:0 cpu on a machine with an NVIDIA "
        "driver, else cpu)",
    )
    g.add_argument(
        "--high-precision-dtype",
        choices=("fp16", "fp32"),
        default="fp16",
        help="precision of what is not quantized, the groups kept out included (default fp16)",
    )
    g.add_argument("--fp16-onnx", type=Path, help="FP16 reference made elsewhere (default: ModelOpt AutoCast)")
    g.add_argument(
        "--int8-onnx",
        type=Path,
        nargs="+",
        default=[],
        help="quantized INT8-all (Q/DQ) models made elsewhere, e.g. by --references-only: each is one calibration "
        "of the sweep, named after its file; candidates remove Q/DQ pairs from the chosen one (no ModelOpt). A "
        "calibration cache beside a model (NAME.cache beside NAME.onnx) goes into best/, whose "
        "quantize_command.sh then reproduces the candidate with ModelOpt (default: none)",
    )
    g.add_argument(
        "--references-only",
        action="store_true",
        help="make the references into --out (FP16, and each calibration's cache and INT8-all model beside it) "
        "with ModelOpt, print the flags that use them, and stop: for a search on a machine without ModelOpt",
    )


def _add_search_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--budget", type=float, default=0.005, help="allowed mAP drop vs FP16, paired (default 0.005)")
    g.add_argument(
        "--max-evals",
        type=int,
        default=40,
        help="most candidate evaluations (screen or full set; the FP16 reference's are not counted) (default 40)",
    )
    g.add_argument(
        "--screen-images",
        type=int,
        default=50,
        help="screening subset: the first N images of the full set (default 50; >= the full set: all of it)",
    )
    g.add_argument(
        "--groups",
        default="yolov10",
        help=f"layer groups: {' | '.join(GROUPINGS)} | a JSON file {{name: [node regex, ...]}} (default yolov10)",
    )
    g.add_argument("--no-prune", action="store_true", help="skip the prune pass")
    g.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates per difference (default 200)")
    g.add_argument(
        "--worthwhile-share",
        type=float,
        default=0.4,
        help="INT8 share of conv MACs below which a result is called not worthwhile (default 0.4)",
    )
    g.add_argument(
        "--proxy-ranking",
        type=Path,
        help="a layer-sensitivity-report.json (or AutoQuantize state) to compare with the measured ranking "
        "(default: none)",
    )


def _add_data_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--data-root",
        type=Path,
        default=DEFAULT_DATA_ROOT,
        help="COCO root holding val2017/ and annotations/instances_val2017.json (default: %(default)s)",
    )
    g.add_argument("--instances", type=Path, help="instances JSON (default: <data-root>/annotations/...val2017.json)")
    g.add_argument("--images-dir", type=Path, help="image folder (default: <data-root>/val2017)")
    g.add_argument(
        "--max-images",
        type=int,
        default=100,
        help="the full set: the first N images by id (default 100; <= 0: all, what a real search wants)",
    )
    g.add_argument(
        "--image-ids-list", type=Path, help="the full set as a file of image ids, one per line (default: none)"
    )
    g.add_argument(
        "--providers",
        nargs="+",
        default=None,
        help="ONNX Runtime EPs for scoring; the first accelerator must be available, nothing falls back (default: "
        "with --resume the run's own, else CUDAExecutionProvider CPUExecutionProvider when this ONNX Runtime has "
        "CUDA, else CPUExecutionProvider)",
    )
    g.add_argument(
        "--workers", type=int, default=default_workers(), help="image loader threads (default: one per core, up to 16)"
    )


def _add_output_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--out", type=Path, help="run folder (default: tmp/search/<timestamp>)")
    g.add_argument("--resume", action="store_true", help="continue the search in --out from its state.json")
    g.add_argument(
        "--build",
        choices=BUILD_MODES,
        default="final",
        help="TensorRT builds: the chosen candidate (final, default), every candidate (all), or none",
    )
    g.add_argument(
        "--trt-api",
        choices=("tensorrt-rtx", "tensorrt"),
        default="tensorrt-rtx",
        help="TensorRT builder of the final engine (default tensorrt-rtx: it builds on the CPU too)",
    )
    g.add_argument(
        "--quant-python",
        default=None,
        help="interpreter of the ModelOpt environment (default: $YOLO_QUANT_PYTHON, else this one when it has "
        "ModelOpt, else .venv-quant/bin/python)",
    )
    g.add_argument(
        "--quant-workers",
        type=int,
        default=default_quant_workers(),
        help="ModelOpt processes making the ranking's candidates in parallel (default: 1 below 8 cores, else "
        "cores / 4 up to 3)",
    )
    g.add_argument("--keep-candidates", action="store_true", help="keep every candidate ONNX in candidates/")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> None:
    check_range("--budget", args.budget, 0, lo_open=True)
    check_range("--max-evals", args.max_evals, 1)
    check_range("--screen-images", args.screen_images, 1)
    check_range("--bootstrap", args.bootstrap, 0)
    check_range("--worthwhile-share", args.worthwhile_share, 0, 1)
    check_range("--workers", args.workers, 0)
    check_range("--quant-workers", args.quant_workers, 1)
    for c in args.calib_counts:
        check_range("--calib-counts", c, 0)
    for flag in ("onnx_path", "calib", "fp16_onnx", "int8_onnx", "proxy_ranking"):
        value = getattr(args, flag)
        for path in value if isinstance(value, list) else [value]:
            if path is not None and not path.is_file():
                raise UserError(f"--{flag.replace('_', '-')} {path}: no such file")
    if args.references_only:
        _check_references_only(args)
        return
    if args.proxy_ranking and args.groups != "yolov10":
        raise UserError("--proxy-ranking maps layers to yolov10 groups: use it with --groups yolov10")
    if args.resume and args.out is None:
        raise UserError("--resume continues a run folder: pass it as --out")
    check_output_dir("--out", args.out)
    if args.out is not None and args.out.is_dir() and any(args.out.iterdir()) and not (args.out / STATE_FILE).exists():
        raise UserError(f"--out {args.out} is a folder with other files and no search in it; choose a new folder")
    if args.out is not None and not args.resume and (args.out / STATE_FILE).exists():
        raise UserError(f"--out {args.out} holds a search already; pass --resume to continue it or a new --out")
    if args.resume and not (args.out / STATE_FILE).is_file():
        raise UserError(f"--resume: no {STATE_FILE} in --out {args.out}; start a new search without --resume")


def _check_references_only(args: argparse.Namespace) -> None:
    if args.out is None:
        raise UserError("--references-only writes the references into a folder: pass it as --out")
    if args.resume or args.int8_onnx or args.fp16_onnx:
        raise UserError("--references-only makes the references with ModelOpt: drop --resume, --int8-onnx, --fp16-onnx")
    if args.calib is None:
        raise UserError("--references-only needs --calib (make one with make_calib_npy.py)")
    check_output_dir("--out", args.out)
    if (args.out / STATE_FILE).exists():
        raise UserError(f"--out {args.out} holds a search; --references-only needs a folder of its own")


def _providers(args: argparse.Namespace) -> tuple[str, ...]:
    if args.providers:
        return tuple(args.providers)
    if args.resume:  # the run's own: a resumed search scores (and is fingerprinted) as it began
        return tuple(saved_providers(args.out))
    import onnxruntime as ort

    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return ("CUDAExecutionProvider", "CPUExecutionProvider") if cuda else ("CPUExecutionProvider",)


def _config(args: argparse.Namespace, argv: Sequence[str], input_size: int) -> RunConfig:
    methods = args.calib_methods or (["entropy", "max"] if args.mode == "int8" else ["max"])
    eps = args.calibration_eps or (["cuda:0", "cpu"] if os.path.exists("/dev/nvidiactl") else ["cpu"])
    search = SearchOptions(
        mode=args.mode,
        budget=args.budget,
        max_evals=args.max_evals,
        prune=not args.no_prune,
        worthwhile_share=args.worthwhile_share,
        build=args.build,
        keep_candidates=args.keep_candidates,
    )
    score = ScoreOptions(providers=_providers(args), imgsz=input_size, workers=args.workers, replicates=args.bootstrap)
    return RunConfig(
        source=args.onnx_path,
        out=args.out,
        calib=args.calib,
        sweep=tuple((m, c) for m in dict.fromkeys(methods) for c in dict.fromkeys(args.calib_counts)),
        calibration_eps=tuple(eps),
        high_precision_dtype=args.high_precision_dtype,
        groups=args.groups,
        quant_python=args.quant_python or default_quant_python(),
        quant_workers=args.quant_workers,
        proxy=args.proxy_ranking,
        trt_api=args.trt_api,
        fp16_onnx=args.fp16_onnx,
        int8_onnx=tuple(args.int8_onnx),
        resume=args.resume,
        progress=not args.no_progress,
        command=shlex.join(["search_precision.py", *argv]),
        search=search,
        score=score,
    )


def _input_size(path: Path) -> int:
    import onnx

    from common.quant.presets import graph_stats, input_spec

    model = onnx.load(str(path), load_external_data=False)
    if graph_stats(model)["quantize_linear"]:
        raise UserError(f"--onnx-path {path} already has Q/DQ nodes; start from the float32 model")
    shape = input_spec(model)[1]
    return int(shape[2]) if len(shape) == 4 and shape[2] else 640


def _references(args: argparse.Namespace, argv: Sequence[str], size: int) -> int:
    from common.quant.search_references import make_references

    refs = make_references(_config(args, argv, size))
    print(refs.listing())
    print(f"references made with ModelOpt {refs.modelopt} in {args.out}; a search elsewhere uses them with:")
    print(f"  {refs.flags()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    _check(args)
    size = _input_size(args.onnx_path)
    check_onnx_input("--onnx-path", args.onnx_path, size)
    if args.references_only:
        return _references(args, argv, size)
    data = DataOptions(args.data_root, args.instances, args.images_dir, args.max_images, args.image_ids_list)
    dataset = open_dataset(data.instances_path, data.images_path, data.max_images, data.image_ids_list)
    check_dataset(dataset)  # every selected image readable, annotations well formed: before any model work
    screen = dataset.image_ids[: args.screen_images]
    cfg = _config(args, argv, size)
    print(
        f"search {args.onnx_path.name}: {args.mode}, budget {args.budget}, screen {len(screen)} / full "
        f"{len(dataset.image_ids)} images, scoring on {' '.join(cfg.score.providers)}",
        file=sys.stderr,
    )
    outcome = run(cfg, dataset, screen)
    print(outcome.verdict)
    resumed = f", this run {outcome.wall_seconds:.1f} s" if outcome.session.state.loaded else ""
    print(
        f"search finished in {outcome.total_seconds:.1f} s{resumed} ({outcome.session.evals_used} evaluations); "
        f"results in {outcome.session.folder} (summary.md, search.jsonl, best/)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
