"""The evaluation's timing around the run: the warm-up before it (every shape the run has) and the latency it
reports, from the lanes' CUDA events or the host, or from a lone batch after the run (the latency pass)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from common.core.results import latency_stats
from common.eval.options import EvalOptions, resolve_warmup_runs
from common.eval.protocols import Backend, Batch, LaneTiming, Warmup

__all__ = [
    "AUTO_LATENCY_RUNS",
    "HOST_TIMING",
    "LANE_TIMING",
    "LANE_TIMING_LONE",
    "LANE_TIMING_OVERLAP",
    "latency_pass",
    "latency_record",
    "warmup",
    "warmup_for_run",
]

LANE_TIMING = "gpu-lane-events: per batch, CUDA events on its lane around H2D + compute (+ GPU post) + D2H"
LANE_TIMING_OVERLAP = LANE_TIMING + "; lanes overlapping on the GPU (--gpu-order overlap): includes other lanes' work"
LANE_TIMING_LONE = (
    "gpu-lane-events, lone batch: the latency pass (latency_pass), back-to-back runs of one batch on one lane "
    "with nothing else in flight, CUDA events around H2D + compute (+ GPU post) + D2H; the lanes overlapped on "
    "the GPU for throughput during the run (each batch's span there, other lanes' work included: inference_gpu)"
)
# latency-pass runs made when the lanes overlap and --latency-runs is 0: the latency is a lone batch's
AUTO_LATENCY_RUNS = 50
HOST_TIMING = "host: per batch, infer() call to host outputs"


def warmup(backend: Backend, batch_size: int | None, size: int, runs: int | str, last_batch: int | None = None) -> int:
    """``runs`` inferences before timing (``auto``: by the backend's device, ``resolve_warmup_runs``); a
    ``Warmup`` backend (several sessions or lanes) warms every one. ``batch_size``: the full batch (None: the
    run has none); ``last_batch``: the size of a partial last batch, warmed too (a new shape: cuDNN searches
    again), first: the run starts at the full batch, which a shape change must not follow (a TensorRT context
    drops its CUDA graphs at one). Returns the runs made per shape."""
    runs = resolve_warmup_runs(runs, backend)
    if runs <= 0:
        return 0
    for b in dict.fromkeys(x for x in (last_batch, batch_size) if x):
        if isinstance(backend, Warmup):
            backend.warmup(b, runs)
            continue
        dummy = np.zeros((b, 3, size, size), dtype=np.float32)
        for _ in range(runs):
            backend.infer(dummy)
    return runs


def warmup_for_run(backend: Backend, n: int, batch_size: int, size: int, runs: int | str) -> int:
    """``warmup`` at the shapes a run of ``n`` images in batches of ``batch_size`` has: the full batch (never one
    larger than the run) and its partial last batch, if any."""
    full = batch_size if n >= batch_size else None
    return warmup(backend, full, size, runs, n % batch_size or None)


def latency_record(
    inference: dict[str, Any],
    gpu_s: list[float],
    lone_pass: dict[str, Any] | None,
    lone: bool,
    skip: int,
    batch_size: int,
) -> tuple[dict[str, Any], str]:
    """metrics.json ``latency`` and what it measures: a lone batch's lane-event time (the latency pass) where
    the lanes overlapped, each batch's lane-event time where they ran one batch at a time, else host time."""
    if lone and lone_pass is not None and lone_pass.get("gpu") is not None:
        return lone_pass["gpu"], LANE_TIMING_LONE
    if gpu_s:
        return latency_stats(
            gpu_s, skip=skip, items_per_sample=batch_size
        ), LANE_TIMING_OVERLAP if lone else LANE_TIMING
    return inference, HOST_TIMING


def latency_pass(backend: Backend, batch: Batch, b: int, opts: EvalOptions, runs: int | None = None) -> dict[str, Any]:
    """trtexec-style: ``runs`` (default ``opts.latency_runs``) back-to-back runs of one real batch of ``b``
    images (the run's first images, as the pipeline made them), nothing else in flight, after the evaluation (so
    everything is warm). Host time per run always; GPU time (CUDA events on the lane) for a ``LaneTiming``
    backend, on its first lane."""
    runs = opts.latency_runs if runs is None else runs
    out: dict[str, Any] = {"runs": runs, "batch_size": b, "automatic": runs != opts.latency_runs}
    if isinstance(backend, LaneTiming):
        got = backend.latency_runs(batch, runs)
        out["host"] = latency_stats([ms / 1000.0 for ms in got["host_ms"]], items_per_sample=b)
        out["gpu"] = latency_stats([ms / 1000.0 for ms in got["gpu_ms"]], items_per_sample=b)
        out["gpu_timing"] = LANE_TIMING
    else:
        host = []
        for _ in range(runs):
            t0 = time.perf_counter()
            backend.infer(batch)
            host.append(time.perf_counter() - t0)
        out["host"] = latency_stats(host, items_per_sample=b)
        out["gpu"] = None
    return out
