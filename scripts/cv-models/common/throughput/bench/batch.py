"""One batch size end to end: every variant's backend started, the ceiling measured at each lane count a
timed variant runs, the variants timed in rounds, the sequential reference path, the AP check, and the
verdicts (``summarise``)."""

from __future__ import annotations

import math
from typing import Any

from common.core.errors import UserError
from common.data.coco import CocoDataset
from common.throughput.bench.ceiling import ceiling
from common.throughput.bench.modes import enable_mode
from common.throughput.bench.options import BenchOptions
from common.throughput.bench.runs import at_least, compare_to_sequential, run_ours, time_in_rounds
from common.throughput.bench.variants import compile_post_kernels, make_backends, make_trt_backends

__all__ = ["VAL2017_IMAGES", "bench_batch", "summarise"]

# COCO val2017's images: what a user's evaluation runs through, start-up included (``seconds_for_val2017``)
VAL2017_IMAGES = 5000


def _add_trt(opts: BenchOptions, batch: int, gpu: bool, dynamic: bool, backends: dict, failed: dict) -> set[str]:
    """The TensorRT backends of ``opts.trt_api`` added to ``backends`` (a failure to ``failed``): their names."""
    names: set[str] = set()
    if not opts.trt_api:
        return names
    try:
        trt = make_trt_backends(opts.onnx_path, batch, opts.trt_api, gpu, dynamic)
        for name, (backend, prep) in trt.items():
            if prep != "cpu":
                enable_mode(backend, prep)
            backends[name] = (backend, prep)
            names.add(name)
    except Exception as exc:
        failed[opts.trt_api] = f"{type(exc).__name__}: {exc}"
    return names


def bench_batch(opts: BenchOptions, ds: CocoDataset, batch: int, gpu: bool) -> dict[str, Any]:
    """The row of batch size ``batch``: the ceiling, each timed variant (``ours``), the sequential path, the
    AP check and the verdicts."""
    starts: dict[str, float] = {}
    compile_s = compile_post_kernels() if gpu else None
    backends, failed = make_backends(opts.onnx_path, batch, gpu, opts.lanes, opts.variants, starts, opts.cuda_options)
    main_name = next(iter(backends))
    main = backends[main_name][0]
    trt_names = _add_trt(opts, batch, gpu, main.input.batch_dynamic, backends, failed)
    size = main.input.shape[2] or 640
    row: dict[str, Any] = {"batch_size": batch, "backend": main_name, "failed": dict(failed)}
    timed = [
        name
        for name in backends
        if not opts.variants or name in opts.variants or name == main_name or name in trt_names
    ]
    # the overlapped ceiling at every lane count a timed variant runs (the honest ceiling is the best of them)
    row["ceiling"] = ceiling(main, batch, int(size), opts.min_seconds, [backends[name][0] for name in timed])
    n_images = math.ceil(row["ceiling"]["images_per_s"] * opts.min_seconds * 1.2)

    def run_variant(name: str, n: int) -> dict[str, Any]:
        backend, prep = backends[name]
        return run_ours(backend, ds, batch, opts.workers, n, prep, opts.switch_interval_ms)

    row["ours"], row["round_order"] = time_in_rounds(
        timed, run_variant, opts.rounds, n_images, opts.min_seconds, row["failed"]
    )
    row["kernel_compile_seconds"] = compile_s
    for name, figure in row["ours"].items():
        figure["start_seconds"] = starts.get(name)
    seq_backend = backends.get("ort-cuda-plain", backends[main_name])[0]
    row["sequential"] = (
        None
        if opts.skip_sequential
        else at_least(
            lambda n: run_ours(seq_backend, ds, batch, 0, n), max(len(ds.image_ids), n_images // 3), opts.min_seconds
        )
    )
    # AP: the sequential CPU-letterbox path against every timed variant, one scored pass each
    compare_to_sequential(row, backends, seq_backend, ds, batch, opts.workers)
    if not row["ours"]:
        raise UserError(f"every variant failed: {row['failed']}")
    summarise(row, main_name)
    for backend, _ in backends.values():
        backend.close()
    return row


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
