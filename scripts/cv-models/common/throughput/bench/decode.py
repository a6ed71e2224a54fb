"""Decoding on its own (``bench_eval_throughput.py --decode-bench``): OpenCV in threads, as the loaders decode
by default, against nvImageCodec's batched decode (``--decode gpu``), and nvImageCodec's pixels against
OpenCV's. Each rate decodes the given files repeated until at least ``min_seconds`` have passed."""

from __future__ import annotations

import concurrent.futures as cf
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from common.throughput.gpu_decode import GPU_OPTIONS, ImageDecoder, read_encoded

__all__ = ["decode_report", "format_decode", "nvimgcodec_rate", "opencv_rate", "pixel_check"]


def _decode_cv2(data: np.ndarray) -> int:
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return int(img.shape[0])


def opencv_rate(paths: list[Path], workers: int, min_seconds: float) -> dict[str, Any]:
    """Images/s of ``cv2.imdecode`` in ``workers`` threads on bytes already in memory."""
    datas = [np.fromfile(str(p), np.uint8) for p in paths]
    done, t0 = 0, time.perf_counter()
    with cf.ThreadPoolExecutor(max(1, workers)) as pool:
        while time.perf_counter() - t0 < min_seconds:
            list(pool.map(_decode_cv2, datas))
            done += len(datas)
    wall = time.perf_counter() - t0
    return {"images_per_s": done / wall, "images": done, "seconds": wall, "workers": workers}


def nvimgcodec_rate(
    paths: list[Path], batch: int, min_seconds: float, device_id: int = 0, backend: str = "gpu"
) -> dict[str, Any]:
    """Images/s of one nvImageCodec decoder, ``batch`` files per call, each batch finished (its stream
    synchronised) before the next, on bytes already in memory (headers parsed once, as the loaders do)."""
    from common.gpu.cuda_mem import CudaMemory

    encoded = [read_encoded(p) for p in paths]
    decoder = ImageDecoder(device_id, backend)
    mem = CudaMemory(device_id) if backend == "gpu" else None
    stream = mem.stream() if mem is not None else None
    handle = int(stream.handle) if stream is not None else 0
    batches = [encoded[k : k + batch] for k in range(0, len(encoded), batch)]
    decoder.decode(batches[0], handle)  # first call: the decoder's own set-up
    if stream is not None:
        stream.synchronize()
    done, t0 = 0, time.perf_counter()
    try:
        while time.perf_counter() - t0 < min_seconds:
            for b in batches:
                decoder.decode(b, handle)
                if stream is not None:
                    stream.synchronize()
                done += len(b)
    finally:
        if stream is not None:
            stream.close()
    wall = time.perf_counter() - t0
    return {"images_per_s": done / wall, "images": done, "seconds": wall, "batch": batch, "backend": backend}


def pixel_check(
    paths: list[Path], device_id: int = 0, backend: str = "gpu", options: str = GPU_OPTIONS
) -> dict[str, Any]:
    """nvImageCodec's BGR pixels against OpenCV's, per file: the largest difference and the share of
    samples that differ at all (decoder ``options``: nvImageCodec's)."""
    decoder = ImageDecoder(device_id, backend, options=options)
    worst, differ, total, worst_file = 0, 0, 0, ""
    per_image_max: dict[int, int] = {}
    for k in range(0, len(paths), 32):
        chunk = paths[k : k + 32]
        encoded = [read_encoded(p) for p in chunk]
        for p, d in zip(chunk, decoder.decode(encoded, 0), strict=True):
            got = np.asarray(d.owner.cpu()).astype(np.int16)
            ref = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR)
            diff = np.abs(got - ref)
            m = int(diff.max())
            per_image_max[m] = per_image_max.get(m, 0) + 1
            if m > worst:
                worst, worst_file = m, str(p)
            differ += int((diff > 0).sum())
            total += int(diff.size)
    return {
        "images": len(paths),
        "max_abs_diff": worst,
        "worst_file": worst_file,
        "share_differing": differ / max(total, 1),
        "images_by_max_diff": dict(sorted(per_image_max.items())),
        "backend": backend,
        "options": options,
    }


def decode_report(paths: list[Path], workers: int, batches: list[int], min_seconds: float, gpu: bool) -> dict[str, Any]:
    backend = "gpu" if gpu else "cpu"
    out: dict[str, Any] = {"files": len(paths), "opencv": opencv_rate(paths, workers, min_seconds), "nvimgcodec": {}}
    for b in batches:
        out["nvimgcodec"][str(b)] = nvimgcodec_rate(paths, b, min_seconds, backend=backend)
    out["pixels"] = pixel_check(paths, backend=backend)
    if gpu:  # what the chroma option changes
        out["pixels_default_options"] = pixel_check(paths, backend=backend, options="")
    return out


def format_decode(rep: dict[str, Any]) -> str:
    cv = rep["opencv"]
    label = f"OpenCV, {cv['workers']} threads"
    lines = [f"{'decoder':<34}{'img/s':>9}", f"{label:<34}{cv['images_per_s']:>9.1f}"]
    for b, r in rep["nvimgcodec"].items():
        lines.append(f"{'nvImageCodec ' + r['backend'] + ', batch ' + b:<34}{r['images_per_s']:>9.1f}")
    for key in ("pixels", "pixels_default_options"):
        px = rep.get(key)
        if px is None:
            continue
        lines.append(
            f"pixels vs OpenCV ({px['backend']}, options {px['options']!r}): max {px['max_abs_diff']} grey "
            f"levels, {px['share_differing']:.4%} of samples differ"
        )
        lines.append(f"  images by their largest difference: {px['images_by_max_diff']}")
    return "\n".join(lines)
