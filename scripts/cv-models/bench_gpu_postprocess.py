#!/usr/bin/env python3
"""Post-processing per batch: the NumPy path (yolov10.decode per image) against the GPU kernels
(common.throughput.gpu_postprocess), on recorded model outputs, for several batch sizes.

Outputs are recorded once per model with ONNX Runtime on the CPU (the fixture models on the first
--images valA images; a batch larger than that repeats them). NumPy is timed on the host; the GPU
with CUDA events around the kernels + the D2H copy of the final rows (the input already resident,
as it is after inference), plus the host wall time of launch + synchronise + collect. Both after
--warmup-runs runs. Also counts images whose GPU detections equal NumPy's in order (boxes to 1e-3 px).
Prints a table and writes JSON + the table (default tmp/bench-gpu-post/<timestamp>/).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)

# isort: split
import numpy as np

from common.core.cli import add_old_spelling, check_range, make_parser, run_main, setup_logging
from common.core.errors import UserError
from common.core.results import atomic_write_json, atomic_write_text, latency_stats, run_dir
from common.model.yolov10 import PostprocessOptions, decode, detect_layout

DEFAULT_MODELS = ("yolov10m-synth-dfl144", "yolov10n-synth-raw84", "yolov10n-synth")
DEFAULT_FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


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
    return parser


def record_outputs(model_path: Path, images: list[Path]) -> np.ndarray:
    """The model's output on each image (ONNX Runtime CPU), [n, ...]."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise UserError("recording outputs needs onnxruntime (pip install onnxruntime)") from exc
    from common.data.images import load_image_rgb, preprocess

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: preprocess(load_image_rgb(p), 640)[0][None]})[0] for p in images]
    return np.concatenate(outs)


def bench_model(name: str, outs: np.ndarray, args: argparse.Namespace, opts: PostprocessOptions) -> list[dict]:
    from common.gpu.cuda_mem import CudaMemory
    from common.throughput.gpu_postprocess import GpuPostprocessor

    layout = detect_layout(outs.shape)
    mem = CudaMemory(0)
    stream = mem.stream()
    post = GpuPostprocessor(mem)
    start, end = mem.event(), mem.event()
    rows: list[dict] = []
    try:
        for b in args.batch_sizes:
            batch = np.ascontiguousarray(outs[np.arange(b) % outs.shape[0]])
            dev, host = mem.device_buffer(batch.nbytes), mem.pinned_buffer(batch.nbytes)
            host.view(batch.dtype, batch.shape)[...] = batch
            mem.copy_htod_async(dev.ptr, host.ptr, batch.nbytes, stream)
            post.prepare(layout, b, batch.shape[1:], (640, 640), opts, batch.dtype)
            numpy_s: list[float] = []
            for i in range(args.warmup_runs + args.numpy_runs):
                t = time.perf_counter()
                want = [decode(o, layout, (640, 640), opts) for o in batch]
                if i >= args.warmup_runs:
                    numpy_s.append(time.perf_counter() - t)
            gpu_ms: list[float] = []
            wall_s: list[float] = []
            for i in range(args.warmup_runs + args.runs):
                t = time.perf_counter()
                start.record(stream)
                post.launch(dev.ptr, stream)
                end.record(stream)
                stream.synchronize()
                got = post.collect().detections()
                if i >= args.warmup_runs:
                    wall_s.append(time.perf_counter() - t)
                    gpu_ms.append(mem.elapsed_ms(start, end))
            same = sum(
                len(g) == len(w)
                and g.classes.tolist() == w.classes.tolist()
                and (len(g) == 0 or float(np.abs(g.boxes - w.boxes).max()) <= 1e-3)
                for g, w in zip(got, want, strict=True)
            )
            err = max(
                (
                    float(np.abs(g.boxes - w.boxes).max())
                    for g, w in zip(got, want, strict=True)
                    if len(g) == len(w) and len(g)
                ),
                default=0.0,
            )
            gpu = latency_stats(np.asarray(gpu_ms) / 1000.0, items_per_sample=b)
            rows.append(
                {
                    "model": name,
                    "layout": layout,
                    "batch": b,
                    "numpy": latency_stats(numpy_s, items_per_sample=b),
                    "gpu_events": gpu,
                    "gpu_wall": latency_stats(wall_s, items_per_sample=b),
                    "identical_images": int(same),
                    "images": b,
                    "max_box_error_px": err,
                    "detections": int(sum(len(w) for w in want)),
                }
            )
            dev.free()
            host.free()
    finally:
        post.close()
        start.close()
        end.close()
        stream.close()
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':24} {'batch':>5} | {'numpy ms med/p90/p99':>22} | {'gpu events ms med/p90/p99':>26} | "
        f"{'gpu wall med':>12} | {'speedup':>7} | same order"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        n, g, w = r["numpy"], r["gpu_events"], r["gpu_wall"]
        lines.append(
            f"{r['model']:24} {r['batch']:>5} | {n['median_ms']:6.2f} {n['p90_ms']:6.2f} {n['p99_ms']:7.2f} | "
            f"{g['median_ms']:7.3f} {g['p90_ms']:7.3f} {g['p99_ms']:8.3f} | {w['median_ms']:10.3f}ms | "
            f"{n['median_ms'] / max(w['median_ms'], 1e-9):6.1f}x | {r['identical_images']}/{r['images']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
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
    out_dir = args.out or run_dir("bench-gpu-post")
    opts = PostprocessOptions()
    rows: list[dict[str, Any]] = []
    for name, path in zip(args.models, paths, strict=True):
        recorded = args.outputs_dir / f"{name}.npy" if args.outputs_dir else None
        outs = np.load(recorded) if recorded and recorded.is_file() else record_outputs(path, images)
        rows += bench_model(name, outs, args, opts)
        print(table([r for r in rows if r["model"] == name]).splitlines()[-len(args.batch_sizes) :][-1], flush=True)
    text = table(rows)
    print(text)
    from common.gpu.cuda_mem import device_info

    meta = {"device": device_info(0), "options": dataclasses.asdict(opts), "images": len(images)}
    atomic_write_json(out_dir / "bench_gpu_postprocess.json", {**meta, "rows": rows})
    atomic_write_text(out_dir / "bench_gpu_postprocess.txt", text + "\n")
    print(f"wrote {out_dir}/bench_gpu_postprocess.json")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
