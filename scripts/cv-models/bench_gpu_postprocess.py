#!/usr/bin/env python3
"""Post-processing per batch: the NumPy path (yolov10.decode per image) against the GPU kernels
(common.throughput.gpu_postprocess), on recorded model outputs, for several batch sizes.

Outputs are recorded once per model with ONNX Runtime on the CPU (the fixture models on the first
--images valA images; a batch larger than that repeats them). NumPy is timed on the host; the GPU
with CUDA events around the kernels + the D2H copy of the final rows (the input already resident,
as it is after inference), plus the host wall time of launch + synchronise + collect. Both after
--warmup-runs runs. Also counts images whose GPU detections equal NumPy's in order (boxes to 1e-3 px).
Prints a table and writes JSON + the table (default tmp/bench-gpu-post/<timestamp>/); files already in --out
are replaced only when this toolkit wrote them, or with --force.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)

# isort: split
import numpy as np

from common.core.cli import add_force_flag, add_old_spelling, check_range, make_parser, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import (
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    check_output_paths,
    file_digests,
    run_dir,
    stamp,
)

DEFAULT_MODELS = ("yolov10m-synth-dfl144", "yolov10n-synth-raw84", "yolov10n-synth")
DEFAULT_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
JSON_NAME, TEXT_NAME = "bench_gpu_postprocess.json", "bench_gpu_postprocess.txt"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(
        __doc__ or "",
        [
            "python scripts/cv-models/bench_gpu_postprocess.py --fixtures ../shared/fixtures",
            "python scripts/cv-models/bench_gpu_postprocess.py --models yolov10m-synth-dfl144 --batch-sizes 1 32",
        ],
    )
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES, help="fixtures root (default: %(default)s)")
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help=f"fixture model names (default: {' '.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--images", type=int, default=16, help="distinct valA images recorded per model (default 16)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32], help="batch sizes to time (default: 1 8 16 32)"
    )
    parser.add_argument("--runs", type=int, default=100, help="timed GPU runs per batch size (default 100)")
    parser.add_argument("--numpy-runs", type=int, default=10, help="timed NumPy runs per batch size (default 10)")
    warmup = parser.add_argument("--warmup-runs", type=int, default=10, help="untimed runs first (default 10)")
    parser.add_argument(
        "--outputs-dir",
        type=Path,
        help="recorded outputs <model>.npy to use instead of recording (default: none: record them)",
    )
    out = parser.add_argument("--out", type=Path, help="output folder (default tmp/bench-gpu-post/<timestamp>)")
    add_old_spelling(parser, "--warmup", warmup)
    add_old_spelling(parser, "--out-dir", out)
    add_force_flag(parser)
    return parser


def _inputs(args: argparse.Namespace) -> tuple[list[Path], list[Path]]:
    """The valA images to record on and each model's ONNX path; UserError for a flag out of range or a
    missing input, before any work."""
    for flag, value in (("--images", args.images), ("--runs", args.runs), ("--numpy-runs", args.numpy_runs)):
        check_range(flag, value, 1)
    for b in args.batch_sizes:
        check_range("--batch-sizes", b, 1)
    check_range("--warmup-runs", args.warmup_runs, 0)
    images = sorted((args.fixtures / "synthcoco" / "valA").glob("*.jpg"))[: args.images]
    if not images:
        raise UserError(f"no valA images under {args.fixtures}/synthcoco/valA; pass --fixtures")
    paths = [args.fixtures / "models" / f"{m}.onnx" for m in args.models]
    for m, p in zip(args.models, paths, strict=True):
        if not p.is_file() and not (args.outputs_dir and (args.outputs_dir / f"{m}.npy").is_file()):
            raise UserError(f"model {p} not found; pass --fixtures or --models")
    return images, paths


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    images, paths = _inputs(args)
    check_output_dir("--out", args.out)
    if args.out is not None:
        outputs = {"--out JSON": args.out / JSON_NAME, "--out table": args.out / TEXT_NAME}
        check_output_paths(outputs, {}, force=args.force, vouchers=[args.out / JSON_NAME])
    from common.gpu.cuda_mem import CudaMemory
    from common.model.yolov10 import PostprocessOptions
    from common.throughput.bench.postprocess import PostBenchOptions, bench_model, format_post_table, record_outputs

    opts = PostBenchOptions(
        tuple(args.batch_sizes), args.runs, args.numpy_runs, args.warmup_runs, post=PostprocessOptions()
    )
    mem = CudaMemory(0)
    rows: list[dict[str, Any]] = []
    for name, path in zip(args.models, paths, strict=True):
        recorded = args.outputs_dir / f"{name}.npy" if args.outputs_dir else None
        outs = np.load(recorded) if recorded and recorded.is_file() else record_outputs(path, images)
        rows += bench_model(name, outs, opts, mem)
        print(format_post_table([r for r in rows if r["model"] == name]).splitlines()[-1], flush=True)
    text = format_post_table(rows)
    print(text)
    out_dir = args.out or run_dir("bench-gpu-post")
    atomic_write_text(out_dir / TEXT_NAME, text + "\n")
    meta = {"device": mem.device_info(), "options": dataclasses.asdict(opts), "images": len(images)}
    atomic_write_json(out_dir / JSON_NAME, stamp({**meta, "rows": rows}, file_digests(out_dir / TEXT_NAME)))
    print(f"wrote {out_dir}/{JSON_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
