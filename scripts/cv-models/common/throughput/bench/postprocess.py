"""Post-processing per batch (``bench_gpu_postprocess.py``): the NumPy path (``yolov10.decode`` per image, the
reference) against the GPU kernels (``common.throughput.gpu_postprocess``) on recorded model outputs. NumPy is
timed on the host; the GPU with CUDA events around the kernels and the download of the final rows (the input
already resident, as after inference), and by the host's wall time of launch + synchronise + collect."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.core.errors import UserError
from common.core.results import latency_stats
from common.model.yolov10 import Detections, PostprocessOptions, decode, detect_layout
from common.throughput.gpu_postprocess import GpuPostprocessor

__all__ = ["PostBenchOptions", "bench_model", "format_post_table", "record_outputs"]

INPUT_HW = (640, 640)
BOX_TOLERANCE_PX = 1e-3  # an image's GPU detections equal NumPy's: same classes in order, boxes this close


@dataclass(frozen=True)
class PostBenchOptions:
    """``batch_sizes`` to time; ``runs`` GPU and ``numpy_runs`` NumPy timed runs at each, after
    ``warmup_runs`` untimed ones; ``post``: the thresholds of both paths."""

    batch_sizes: tuple[int, ...] = (1, 8, 16, 32)
    runs: int = 100
    numpy_runs: int = 10
    warmup_runs: int = 10
    post: PostprocessOptions = field(default_factory=PostprocessOptions)


def record_outputs(model_path: Path, images: Sequence[Path]) -> np.ndarray:
    """The model's output on each image (ONNX Runtime CPU, the evaluation letterbox), [n, ...]."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise UserError("recording outputs needs onnxruntime (pip install onnxruntime)") from exc
    from common.data.images import load_image_rgb, preprocess

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: preprocess(load_image_rgb(p), INPUT_HW[0])[0][None]})[0] for p in images]
    return np.concatenate(outs)


def _numpy_runs(batch: np.ndarray, layout: str, opts: PostBenchOptions) -> tuple[list[Detections], list[float]]:
    """NumPy's detections of every image of ``batch`` and the seconds of each timed run."""
    seconds: list[float] = []
    want: list[Detections] = []
    for i in range(opts.warmup_runs + opts.numpy_runs):
        t = time.perf_counter()
        want = [decode(o, layout, INPUT_HW, opts.post) for o in batch]
        if i >= opts.warmup_runs:
            seconds.append(time.perf_counter() - t)
    return want, seconds


def _gpu_runs(
    mem: Any, post: GpuPostprocessor, src: int, stream: Any, opts: PostBenchOptions
) -> tuple[list[Detections], list[float], list[float]]:
    """The kernels' detections, and each timed run's event milliseconds and host wall seconds."""
    start, end = mem.event(), mem.event()
    gpu_ms: list[float] = []
    wall_s: list[float] = []
    got: list[Detections] = []
    try:
        for i in range(opts.warmup_runs + opts.runs):
            t = time.perf_counter()
            start.record(stream)
            post.launch(src, stream)
            end.record(stream)
            stream.synchronize()
            got = post.collect().detections()
            if i >= opts.warmup_runs:
                wall_s.append(time.perf_counter() - t)
                gpu_ms.append(mem.elapsed_ms(start, end))
    finally:
        start.close()
        end.close()
    return got, gpu_ms, wall_s


def _agreement(got: list[Detections], want: list[Detections]) -> tuple[int, float]:
    """(images whose GPU detections equal NumPy's in order, the largest box difference in px of those
    with as many detections)."""
    same = sum(
        len(g) == len(w)
        and g.classes.tolist() == w.classes.tolist()
        and (len(g) == 0 or float(np.abs(g.boxes - w.boxes).max()) <= BOX_TOLERANCE_PX)
        for g, w in zip(got, want, strict=True)
    )
    err = max(
        (float(np.abs(g.boxes - w.boxes).max()) for g, w in zip(got, want, strict=True) if len(g) == len(w) and len(g)),
        default=0.0,
    )
    return int(same), err


def bench_model(name: str, outs: np.ndarray, opts: PostBenchOptions, mem: Any) -> list[dict[str, Any]]:
    """One row per batch size for model ``name`` on its recorded outputs ``outs`` ([n, ...]; a batch larger than
    n repeats them), on CUDA memory layer ``mem``."""
    layout = detect_layout(outs.shape)
    stream = mem.stream()
    post = GpuPostprocessor(mem)
    rows: list[dict[str, Any]] = []
    try:
        for b in opts.batch_sizes:
            batch = np.ascontiguousarray(outs[np.arange(b) % outs.shape[0]])
            dev, host = mem.device_buffer(batch.nbytes), mem.pinned_buffer(batch.nbytes)
            try:
                host.view(batch.dtype, batch.shape)[...] = batch
                mem.copy_htod_async(dev.ptr, host.ptr, batch.nbytes, stream)
                post.prepare(layout, b, batch.shape[1:], INPUT_HW, opts.post, batch.dtype)
                want, numpy_s = _numpy_runs(batch, layout, opts)
                got, gpu_ms, wall_s = _gpu_runs(mem, post, dev.ptr, stream, opts)
            finally:
                dev.free()
                host.free()
            same, err = _agreement(got, want)
            rows.append(
                {
                    "model": name,
                    "layout": layout,
                    "batch": b,
                    "numpy": latency_stats(numpy_s, items_per_sample=b),
                    "gpu_events": latency_stats(np.asarray(gpu_ms) / 1000.0, items_per_sample=b),
                    "gpu_wall": latency_stats(wall_s, items_per_sample=b),
                    "identical_images": same,
                    "images": b,
                    "max_box_error_px": err,
                    "detections": int(sum(len(w) for w in want)),
                }
            )
    finally:
        post.close()
        stream.close()
    return rows


def format_post_table(rows: list[dict[str, Any]]) -> str:
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
